//! `fjord cluster rebalance`: gather what the balancer needs over the Kafka protocol (Metadata
//! for replicas, DescribeCluster for racks and fencing, ListPartitionReassignments for moves in
//! progress), plan with `fjord_metadata::balancer`, print the plan, and with `--execute` carry
//! it out as KIP-455 reassignments (at most `--max-concurrent` at a time, optionally throttled)
//! followed by preferred-leader elections.
//!
//! Cordoned brokers and brokers in maintenance receive nothing: their state is not in Kafka's
//! protocol, so with `--admin` it comes from the admin endpoint (`/v1/cluster`); without it the
//! plan only knows fencing (and says so). `--status` shows the continuous balancer
//! (`GET /v1/balancer`).
//!
//! Replica sizes come from DescribeLogDirs, asked of every unfenced broker (a partition's size
//! is its largest replica's); when a partition's size is missing (a broker did not answer and
//! held its only replica), the plan balances counts and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fjord_client::{AlterConfigOp, Client, ElectionType, ResourceType};
use fjord_metadata::balancer::{
    self, BalancerBroker, BalancerInput, BalancerOptions, BalancerPartition, Imbalance,
    PartitionMove, Plan, Spread,
};
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, DescribeLogDirsRequest,
    ListPartitionReassignmentsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::args::Connect;
use crate::output::{self, Output, Table};

/// What `fjord cluster rebalance` was asked to do.
#[derive(Debug, Clone)]
pub struct RebalanceArgs {
    pub execute: bool,
    pub max_moves: usize,
    pub max_concurrent: usize,
    pub throttle: Option<u64>,
    pub timeout: Duration,
    /// An admin endpoint for the brokers' cordon and maintenance state.
    pub admin: Option<String>,
}

pub async fn run(connect: &Connect, output: Output, args: RebalanceArgs) -> anyhow::Result<()> {
    let client = connect.client().await?;
    let states = match &args.admin {
        Some(a) => Some(crate::cluster::broker_states(a).await?),
        None => None,
    };
    let input = gather(&client, states.as_ref()).await?;
    let plan = balancer::plan(
        &input,
        BalancerOptions {
            max_moves: args.max_moves,
        },
    );
    print_plan(&plan, output, args.execute);
    if output != Output::Json {
        match &states {
            Some(s) if !s.is_empty() => outln!(
                "left out (receive nothing): {}",
                s.iter()
                    .map(|(b, st)| format!("broker {b} ({st})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(_) => {}
            None => outln!(
                "cordon state unknown: pass --admin (or set FJORD_ADMIN) so cordoned brokers and \
                 brokers in maintenance are left out"
            ),
        }
    }
    if !args.execute || plan.moves.is_empty() {
        return Ok(());
    }
    execute(&client, &plan, &args, output).await
}

/// The balancer's input from the cluster's answers; `states` (from the admin endpoint) names
/// brokers that are cordoned or in maintenance.
async fn gather(
    client: &Client,
    states: Option<&BTreeMap<i32, String>>,
) -> anyhow::Result<BalancerInput> {
    let md = client.metadata(None).await?;
    let brokers = match client.describe_cluster().await {
        Ok(d) => d.brokers,
        Err(fjord_client::Error::UnsupportedApi { .. }) => md.brokers.clone(),
        Err(e) => return Err(e.into()),
    };
    let ongoing = list_reassignments(client).await?;
    let mut sizes: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for b in brokers.iter().filter(|b| !b.is_fenced) {
        // A broker that does not answer only leaves its replicas' sizes to the others.
        if let Ok(Ok(found)) =
            tokio::time::timeout(Duration::from_secs(10), log_dir_sizes(client, b.node_id)).await
        {
            for (key, size) in found {
                let e = sizes.entry(key).or_insert(0);
                *e = (*e).max(size);
            }
        }
    }
    let brokers = brokers
        .iter()
        .map(|b| BalancerBroker {
            id: b.node_id,
            rack: b.rack.clone(),
            excluded: b.is_fenced || states.is_some_and(|s| s.contains_key(&b.node_id)),
        })
        .collect();
    let mut partitions = Vec::new();
    for t in &md.topics {
        for p in &t.partitions {
            let key = (t.name.clone(), p.partition);
            let (replicas, frozen) = match ongoing.get(&key) {
                Some((replicas, removing)) => (
                    replicas
                        .iter()
                        .copied()
                        .filter(|r| !removing.contains(r))
                        .collect(),
                    true,
                ),
                None => (p.replicas.clone(), false),
            };
            partitions.push(BalancerPartition {
                topic: t.name.clone(),
                partition: p.partition as u32,
                replicas,
                size: sizes.get(&key).copied(),
                frozen,
                rate: None,
            });
        }
    }
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(BalancerInput {
        brokers,
        partitions,
    })
}

/// The size of every partition replica broker `node_id` hosts (DescribeLogDirs, all topics).
async fn log_dir_sizes(client: &Client, node_id: i32) -> anyhow::Result<Vec<((String, i32), u64)>> {
    let conn = client.broker_connection(node_id).await?;
    let response = conn
        .send(&DescribeLogDirsRequest::default().with_topics(None))
        .await?;
    fjord_client::error::check(
        response.error_code,
        || format!("describe log dirs of broker {node_id}"),
        None,
    )?;
    let mut out = Vec::new();
    for dir in response.results.iter().filter(|d| d.error_code == 0) {
        for t in &dir.topics {
            for p in t.partitions.iter().filter(|p| !p.is_future_key) {
                out.push((
                    (t.name.to_string(), p.partition_index),
                    p.partition_size.max(0) as u64,
                ));
            }
        }
    }
    Ok(out)
}

/// Reassignments in progress: (topic, partition) → (replicas, removing replicas).
type Ongoing = BTreeMap<(String, i32), (Vec<i32>, Vec<i32>)>;

async fn list_reassignments(client: &Client) -> anyhow::Result<Ongoing> {
    let request = ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000);
    let response = client.bootstrap_connection().send(&request).await?;
    fjord_client::error::check(
        response.error_code,
        || "list partition reassignments".to_string(),
        response.error_message.as_ref().map(|m| m.to_string()),
    )?;
    let mut out = Ongoing::new();
    for t in &response.topics {
        for p in &t.partitions {
            out.insert(
                (t.name.to_string(), p.partition_index),
                (
                    p.replicas.iter().map(|b| b.0).collect(),
                    p.removing_replicas.iter().map(|b| b.0).collect(),
                ),
            );
        }
    }
    Ok(out)
}

/// `fjord cluster rebalance --status`: the continuous balancer on the active controller.
pub async fn status(admin: &str, output: Output) -> anyhow::Result<()> {
    let v = crate::cluster::admin_json(admin, "/v1/balancer", "balancer status").await?;
    if output == Output::Json {
        output::json(&v);
        return Ok(());
    }
    let b = &v["balancer"];
    if b.is_null() {
        outln!(
            "No balancer status: {}",
            v["note"]
                .as_str()
                .unwrap_or("the active controller did not report one yet")
        );
        return Ok(());
    }
    let text = |k: &str| b[k].as_str().unwrap_or("-").to_string();
    let num = |k: &str| b[k].as_u64().unwrap_or(0);
    outln!("mode:              {}", text("mode"));
    outln!("state:             {}", text("state"));
    outln!(
        "active controller: {}",
        v["active_controller"]
            .as_i64()
            .map_or("-".into(), |a| a.to_string())
    );
    outln!(
        "rounds:            {} ({} partition move(s) started)",
        num("rounds"),
        num("moves_started")
    );
    outln!("moves in progress: {}", num("moves_in_progress"));
    if let Some(ms) = b["next_round_in_ms"].as_i64() {
        outln!("next round in:     {:.1} s", ms as f64 / 1000.0);
    }
    for f in b["fenced_brokers"].as_array().into_iter().flatten() {
        outln!(
            "fenced broker {}:   for {:.0} s{}",
            f["node_id"],
            f["fenced_for_ms"].as_i64().unwrap_or(0) as f64 / 1000.0,
            if f["gone"] == true {
                " (gone: its replicas move to live brokers)"
            } else {
                ""
            }
        );
    }
    let i = &b["imbalance"];
    if i.is_object() {
        let pair = |min: &str, max: &str| match (i[min].as_u64(), i[max].as_u64()) {
            (Some(a), Some(b)) => format!("min {a} max {b}"),
            _ => "unknown".into(),
        };
        outln!(
            "replicas:          {}",
            pair("replicas_min", "replicas_max")
        );
        outln!("leaders:           {}", pair("leaders_min", "leaders_max"));
        outln!(
            "disk bytes:        {}",
            pair("disk_bytes_min", "disk_bytes_max")
        );
        outln!(
            "network bytes/s:   {}",
            pair("network_bytes_per_s_min", "network_bytes_per_s_max")
        );
        outln!(
            "rack violations:   {}",
            i["rack_violations"].as_u64().unwrap_or(0)
        );
    }
    let r = &b["last_round"];
    if r.is_object() {
        outln!(
            "last round:        {} — {} data move(s), {} leadership move(s), {} refused",
            r["reason"].as_str().unwrap_or("-"),
            r["data_moves"],
            r["leadership_moves"],
            r["refused"]
        );
    }
    Ok(())
}

fn spread_line(name: &str, before: &Spread, after: &Spread) -> String {
    format!(
        "{name:<13} min {} max {} (fair {:.1})  →  min {} max {}",
        before.min, before.max, before.fair, after.min, after.max
    )
}

fn print_plan(plan: &Plan, output: Output, executing: bool) {
    let data: Vec<&PartitionMove> = plan
        .moves
        .iter()
        .filter(|m| !m.is_leadership_only())
        .collect();
    let leadership = plan.moves.len() - data.len();
    if output == Output::Json {
        // With --execute the progress follows as JSON lines; the plan is the first.
        output::json(&serde_json::json!({
            "moves": plan.moves,
            "data_moves": data.len(),
            "leadership_only": leadership,
            "bytes_to_move": plan.sizes_known.then_some(plan.bytes_to_move),
            "sizes_known": plan.sizes_known,
            "before": plan.before,
            "after": plan.after,
        }));
        return;
    }
    if plan.moves.is_empty() {
        outln!("The cluster is balanced: nothing to move.");
    } else {
        let mut table = Table::new(&["TOPIC", "PARTITION", "REPLICAS", "NEW REPLICAS", "BYTES"]);
        let list = |r: &[i32]| {
            r.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        for m in &plan.moves {
            table.row(vec![
                m.topic.clone(),
                m.partition.to_string(),
                list(&m.replicas_before),
                list(&m.replicas_after),
                if m.is_leadership_only() {
                    "leader only".to_string()
                } else if plan.sizes_known {
                    m.bytes.to_string()
                } else {
                    "-".to_string()
                },
            ]);
        }
        table.print();
    }
    outln!(
        "moves:         {} partition(s) with new replicas, {} leadership only",
        data.len(),
        leadership
    );
    if plan.sizes_known {
        outln!("bytes to move: {}", plan.bytes_to_move);
    } else {
        outln!("bytes to move: unknown (some replica sizes are unknown: a broker did not answer DescribeLogDirs; planned by replica counts)");
    }
    print_imbalance(&plan.before, &plan.after);
    if !executing && !plan.moves.is_empty() {
        outln!("Dry run: nothing changed. Run with --execute to carry the plan out.");
    }
}

fn print_imbalance(before: &Imbalance, after: &Imbalance) {
    outln!(
        "{}",
        spread_line("replicas", &before.replicas, &after.replicas)
    );
    outln!(
        "{}",
        spread_line("leaders", &before.leaders, &after.leaders)
    );
    if let (Some(b), Some(a)) = (&before.disk_bytes, &after.disk_bytes) {
        outln!("{}", spread_line("disk bytes", b, a));
    }
    outln!(
        "rack spread:  {} partition(s) below what the racks allow  →  {}",
        before.rack_violations,
        after.rack_violations
    );
}

const THROTTLE_RATES: [&str; 2] = [
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
];

/// Submit the moves at most `max_concurrent` at a time, wait for each to complete, then move
/// leadership to the preferred leaders.
async fn execute(
    client: &Client,
    plan: &Plan,
    args: &RebalanceArgs,
    output: Output,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let total = plan.moves.len();
    if let Some(rate) = args.throttle {
        set_throttles(client, plan, rate).await?;
    }
    let mut pending: Vec<&PartitionMove> = plan.moves.iter().rev().collect();
    let mut in_flight: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut done = 0usize;
    let mut last_report = None;
    let result: anyhow::Result<()> = async {
        while done < total {
            if start.elapsed() > args.timeout {
                anyhow::bail!(
                    "rebalance: {done} of {total} move(s) done after {:?}; the rest are still in progress (see `kafka-reassign-partitions --list`)",
                    args.timeout
                );
            }
            let mut batch = Vec::new();
            while in_flight.len() + batch.len() < args.max_concurrent.max(1) {
                match pending.pop() {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            if !batch.is_empty() {
                submit(client, &batch).await?;
                for m in &batch {
                    in_flight.insert((m.topic.clone(), m.partition as i32));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let ongoing = list_reassignments(client).await?;
            let before = in_flight.len();
            in_flight.retain(|k| ongoing.contains_key(k));
            done += before - in_flight.len();
            if last_report != Some(done) {
                last_report = Some(done);
                progress(output, done, total, in_flight.len(), start.elapsed());
            }
        }
        Ok(())
    }
    .await;
    if args.throttle.is_some() {
        // Throttles stay only while moves are running; a failure leaves them for the operator
        // to see alongside the moves still in progress.
        if result.is_ok() {
            clear_throttles(client, plan).await?;
        }
    }
    result?;
    // The reassignments put each preferred leader first; now make them lead.
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for m in &plan.moves {
        if m.replicas_before.first() != m.replicas_after.first() {
            by_topic
                .entry(m.topic.clone())
                .or_default()
                .push(m.partition as i32);
        }
    }
    let mut failed = 0usize;
    if !by_topic.is_empty() {
        let list: Vec<(String, Vec<i32>)> = by_topic.into_iter().collect();
        for r in client
            .elect_leaders(ElectionType::Preferred, Some(&list))
            .await?
        {
            // ELECTION_NOT_NEEDED (84): already led by its preferred leader.
            if r.error_code != 0 && r.error_code != 84 {
                failed += 1;
                tracing::warn!(topic = %r.topic, partition = r.partition, code = r.error_code, "preferred election failed");
            }
        }
    }
    if output == Output::Json {
        output::json(&serde_json::json!({
            "done": done,
            "total": total,
            "elections_failed": failed,
            "elapsed_ms": start.elapsed().as_millis() as u64,
        }));
    } else {
        outln!(
            "Rebalance done: {done} move(s) in {:.1} s{}",
            start.elapsed().as_secs_f64(),
            if failed > 0 {
                format!(
                    ", {failed} preferred-leader election(s) failed (the controller retries periodically)"
                )
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

fn progress(output: Output, done: usize, total: usize, running: usize, elapsed: Duration) {
    if output == Output::Json {
        output::json(&serde_json::json!({
            "done": done,
            "total": total,
            "in_progress": running,
            "elapsed_ms": elapsed.as_millis() as u64,
        }));
    } else {
        outln!(
            "[{:>6.1}s] {done}/{total} done, {running} in progress",
            elapsed.as_secs_f64()
        );
    }
}

async fn submit(client: &Client, batch: &[&PartitionMove]) -> anyhow::Result<()> {
    let mut topics: BTreeMap<&str, Vec<&PartitionMove>> = BTreeMap::new();
    for m in batch {
        topics.entry(&m.topic).or_default().push(m);
    }
    let request = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_allow_replication_factor_change(false)
        .with_topics(
            topics
                .iter()
                .map(|(t, ms)| {
                    ReassignableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(
                            ms.iter()
                                .map(|m| {
                                    ReassignablePartition::default()
                                        .with_partition_index(m.partition as i32)
                                        .with_replicas(Some(
                                            m.replicas_after.iter().map(|b| BrokerId(*b)).collect(),
                                        ))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = client.bootstrap_connection().send(&request).await?;
    fjord_client::error::check(
        response.error_code,
        || "alter partition reassignments".to_string(),
        response.error_message.as_ref().map(|m| m.to_string()),
    )?;
    for t in &response.responses {
        for p in &t.partitions {
            fjord_client::error::check(
                p.error_code,
                || format!("reassign {}-{}", t.name.as_str(), p.partition_index),
                p.error_message.as_ref().map(|m| m.to_string()),
            )?;
        }
    }
    Ok(())
}

/// Kafka's throttle setup for a reassignment: the rate on every broker involved, and per topic
/// the replicas it applies to (`partition:broker`): the current replicas on the leader side,
/// the new ones on the follower side.
async fn set_throttles(client: &Client, plan: &Plan, rate: u64) -> anyhow::Result<()> {
    let (brokers, leader, follower) = throttled(plan);
    for b in &brokers {
        let ops: Vec<AlterConfigOp> = THROTTLE_RATES
            .iter()
            .map(|k| AlterConfigOp::Set(k.to_string(), rate.to_string()))
            .collect();
        client
            .incremental_alter_configs(ResourceType::Broker, &b.to_string(), &ops, false)
            .await?;
    }
    for (topic, list) in &leader {
        let mut ops = vec![AlterConfigOp::Set(
            "leader.replication.throttled.replicas".into(),
            list.join(","),
        )];
        if let Some(f) = follower.get(topic) {
            ops.push(AlterConfigOp::Set(
                "follower.replication.throttled.replicas".into(),
                f.join(","),
            ));
        }
        client
            .incremental_alter_configs(ResourceType::Topic, topic, &ops, false)
            .await?;
    }
    Ok(())
}

async fn clear_throttles(client: &Client, plan: &Plan) -> anyhow::Result<()> {
    let (brokers, leader, _) = throttled(plan);
    for b in &brokers {
        let ops: Vec<AlterConfigOp> = THROTTLE_RATES
            .iter()
            .map(|k| AlterConfigOp::Delete(k.to_string()))
            .collect();
        client
            .incremental_alter_configs(ResourceType::Broker, &b.to_string(), &ops, false)
            .await?;
    }
    for topic in leader.keys() {
        let ops = vec![
            AlterConfigOp::Delete("leader.replication.throttled.replicas".into()),
            AlterConfigOp::Delete("follower.replication.throttled.replicas".into()),
        ];
        client
            .incremental_alter_configs(ResourceType::Topic, topic, &ops, false)
            .await?;
    }
    Ok(())
}

type ThrottleLists = BTreeMap<String, Vec<String>>;

/// Brokers involved in data moves, and per topic the leader-side and follower-side
/// `partition:broker` lists.
fn throttled(plan: &Plan) -> (BTreeSet<i32>, ThrottleLists, ThrottleLists) {
    let mut brokers = BTreeSet::new();
    let mut leader = ThrottleLists::new();
    let mut follower = ThrottleLists::new();
    for m in plan.moves.iter().filter(|m| !m.is_leadership_only()) {
        for b in &m.replicas_before {
            brokers.insert(*b);
            leader
                .entry(m.topic.clone())
                .or_default()
                .push(format!("{}:{b}", m.partition));
        }
        for b in m
            .replicas_after
            .iter()
            .filter(|b| !m.replicas_before.contains(b))
        {
            brokers.insert(*b);
            follower
                .entry(m.topic.clone())
                .or_default()
                .push(format!("{}:{b}", m.partition));
        }
    }
    (brokers, leader, follower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lists_name_current_and_new_replicas() {
        let plan = Plan {
            moves: vec![
                PartitionMove {
                    topic: "t".into(),
                    partition: 0,
                    replicas_before: vec![1, 2],
                    replicas_after: vec![3, 2],
                    bytes: 0,
                },
                PartitionMove {
                    topic: "t".into(),
                    partition: 1,
                    replicas_before: vec![1, 2],
                    replicas_after: vec![2, 1],
                    bytes: 0,
                },
            ],
            bytes_to_move: 0,
            before: imbalance(),
            after: imbalance(),
            sizes_known: false,
            rates_known: false,
        };
        let (brokers, leader, follower) = throttled(&plan);
        assert_eq!(brokers.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(leader["t"], vec!["0:1", "0:2"]);
        assert_eq!(follower["t"], vec!["0:3"]);
    }

    fn imbalance() -> Imbalance {
        let s = Spread {
            min: 0,
            max: 0,
            fair: 0.0,
        };
        Imbalance {
            replicas: s,
            leaders: s,
            disk_bytes: None,
            network: None,
            rack_violations: 0,
        }
    }
}
