//! `fjord perf group`: how fast the coordinator brings N members to Stable, and back to Stable
//! after one member leaves — classic (JoinGroup/SyncGroup/Heartbeat) or KIP-848
//! (ConsumerGroupHeartbeat). The members are ideal clients (they answer at once and heartbeat
//! every `--heartbeat-ms`), so the figures measure the coordinator, not client back-off.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use fjord_client::{Connection, ConnectionConfig};
use kafka_protocol::messages::{
    consumer_group_heartbeat_request, join_group_request, sync_group_request,
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, DescribeGroupsRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;

use crate::args::Connect;

#[derive(Debug, Args)]
pub struct GroupPerfArgs {
    /// Members in the group.
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// classic or consumer (KIP-848).
    #[arg(long, default_value = "classic")]
    protocol: String,
    /// Topic to subscribe to (created with --partitions if missing).
    #[arg(long, default_value = "perf-group")]
    topic: String,
    #[arg(long, default_value_t = 200)]
    partitions: i32,
    /// How often each member heartbeats.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub async fn run(connect: &Connect, a: GroupPerfArgs) -> anyhow::Result<()> {
    let client = connect.client().await?;
    if client.partition_count(&a.topic).await.is_err() {
        client
            .create_topic(
                &fjord_client::NewTopic::new(a.topic.clone(), a.partitions, 1),
                false,
            )
            .await
            .with_context(|| format!("creating {}", a.topic))?;
    }
    let partitions = client.partition_count(&a.topic).await?;
    let group = format!("perf-{}-{}", a.protocol, std::process::id());
    let addr = client.bootstrap_connection().addr().to_string();
    // The CLI's connection settings (SASL, TLS) with this tool's id and timeout.
    let config = ConnectionConfig {
        client_id: "fjord-perf-group".into(),
        request_timeout: Duration::from_secs(120),
        ..connect.config().connection
    };
    let admin = Arc::new(Connection::connect(&addr, config.clone()).await?);
    let classic = match a.protocol.as_str() {
        "classic" => true,
        "consumer" => false,
        other => bail!("--protocol must be classic or consumer, got {other:?}"),
    };
    outln!(
        "{} members, protocol {}, topic {} ({} partitions), group {}",
        a.members,
        a.protocol,
        a.topic,
        partitions,
        group
    );
    let started = Instant::now();
    let mut stops = Vec::new();
    for i in 0..a.members {
        let conn = Connection::connect(&addr, config.clone()).await?;
        let (tx, rx) = watch::channel(false);
        stops.push(tx);
        let (group, topic) = (group.clone(), a.topic.clone());
        let hb = Duration::from_millis(a.heartbeat_ms);
        tokio::spawn(async move {
            let r = if classic {
                classic_member(conn, &group, &topic, partitions, i, hb, rx).await
            } else {
                consumer_member(conn, &group, &topic, i, hb, rx).await
            };
            if let Err(e) = r {
                eprintln!("member {i}: {e:#}");
            }
        });
    }
    let spawned = started.elapsed();
    wait_stable(&admin, &group, classic, a.members).await?;
    let to_stable = started.elapsed();
    outln!(
        "{} members to Stable: {:.1} ms (members connected after {:.1} ms)",
        a.members,
        to_stable.as_secs_f64() * 1e3,
        spawned.as_secs_f64() * 1e3
    );
    let left = Instant::now();
    let _ = stops[0].send(true);
    wait_stable(&admin, &group, classic, a.members - 1).await?;
    outln!(
        "after one member left, Stable again in: {:.1} ms",
        left.elapsed().as_secs_f64() * 1e3
    );
    for s in &stops {
        let _ = s.send(true);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// Poll the coordinator until the group is Stable with `n` members (60 s at most).
async fn wait_stable(
    admin: &Connection,
    group: &str,
    classic: bool,
    n: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (state, members) = if classic {
            let r = admin
                .send(&DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(group))]))
                .await?;
            let g = r.groups.into_iter().next().context("no group")?;
            (g.group_state.to_string(), g.members.len())
        } else {
            let r = admin
                .send(
                    &ConsumerGroupDescribeRequest::default()
                        .with_group_ids(vec![GroupId(sb(group))]),
                )
                .await?;
            let g = r.groups.into_iter().next().context("no group")?;
            (g.group_state.to_string(), g.members.len())
        };
        if state == "Stable" && members == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "group not Stable with {n} members after 60 s (state {state}, {members} members)"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn classic_member(
    conn: Connection,
    group: &str,
    topic: &str,
    partitions: i32,
    index: usize,
    hb: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let metadata =
        fjord_group::subscription::encode_subscription(&fjord_group::subscription::Subscription {
            topics: vec![topic.to_string()],
            ..Default::default()
        });
    let mut member_id = String::new();
    'rejoin: loop {
        let join = JoinGroupRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(60_000)
            .with_member_id(sb(&member_id))
            .with_protocol_type(sb("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(sb("range"))
            .with_metadata(metadata.clone())]);
        let r = conn.send(&join).await?;
        member_id = r.member_id.to_string();
        match r.error_code {
            0 => {}
            79 | 27 => continue 'rejoin, // MEMBER_ID_REQUIRED, REBALANCE_IN_PROGRESS
            e => bail!("JoinGroup error {e} (member {index})"),
        }
        let generation = r.generation_id;
        let assignments = if r.leader == r.member_id {
            // Round-robin the partitions over the members.
            let ids: Vec<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
            let mut per: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for p in 0..partitions {
                per.entry(ids[p as usize % ids.len()].clone())
                    .or_default()
                    .push(p);
            }
            ids.iter()
                .map(|id| {
                    let a = fjord_group::subscription::encode_assignment(&[(
                        topic.to_string(),
                        per.get(id).cloned().unwrap_or_default(),
                    )]);
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(sb(id))
                        .with_assignment(a)
                })
                .collect()
        } else {
            Vec::new()
        };
        let s = conn
            .send(
                &SyncGroupRequest::default()
                    .with_group_id(GroupId(sb(group)))
                    .with_generation_id(generation)
                    .with_member_id(sb(&member_id))
                    .with_assignments(assignments),
            )
            .await?;
        if s.error_code != 0 {
            continue 'rejoin;
        }
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    conn.send(&LeaveGroupRequest::default()
                        .with_group_id(GroupId(sb(group)))
                        .with_members(vec![kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                            .with_member_id(sb(&member_id))])).await?;
                    return Ok(());
                }
                _ = tokio::time::sleep(hb) => {}
            }
            let h = conn
                .send(
                    &HeartbeatRequest::default()
                        .with_group_id(GroupId(sb(group)))
                        .with_generation_id(generation)
                        .with_member_id(sb(&member_id)),
                )
                .await?;
            if h.error_code != 0 {
                if h.error_code == 25 {
                    member_id.clear();
                }
                continue 'rejoin;
            }
        }
    }
}

async fn consumer_member(
    conn: Connection,
    group: &str,
    topic: &str,
    index: usize,
    hb: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut member_id = uuid_like(index);
    let mut epoch = 0;
    let mut owned: BTreeMap<uuid::Uuid, BTreeSet<i32>> = BTreeMap::new();
    loop {
        let leaving = *stop.borrow();
        let mut req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_member_id(sb(&member_id))
            .with_member_epoch(if leaving { -1 } else { epoch })
            .with_rebalance_timeout_ms(60_000)
            .with_topic_partitions(Some(
                owned
                    .iter()
                    .map(|(t, ps)| {
                        consumer_group_heartbeat_request::TopicPartitions::default()
                            .with_topic_id(*t)
                            .with_partitions(ps.iter().copied().collect())
                    })
                    .collect(),
            ));
        if epoch == 0 {
            req = req.with_subscribed_topic_names(Some(vec![TopicName(sb(topic))]));
        }
        let r = conn.send(&req).await?;
        if leaving {
            return Ok(());
        }
        if r.error_code != 0 {
            bail!(
                "ConsumerGroupHeartbeat error {} (member {index})",
                r.error_code
            );
        }
        if let Some(id) = r.member_id {
            member_id = id.to_string();
        }
        epoch = r.member_epoch;
        if let Some(a) = r.assignment {
            owned = a
                .topic_partitions
                .into_iter()
                .map(|t| (t.topic_id, t.partitions.into_iter().collect()))
                .collect();
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(hb) => {}
        }
    }
}

/// A stable, unique member id per index (KIP-848 v1 lets the client pick it).
fn uuid_like(index: usize) -> String {
    format!("00000000-0000-4000-8000-{:012x}", index + 1)
}
