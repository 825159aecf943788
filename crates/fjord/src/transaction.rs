//! `fjord transaction list|describe` (ListTransactions on every broker, FindCoordinator and
//! DescribeTransactions), printed like kafka-transactions.sh.

use anyhow::bail;
use clap::Subcommand;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, ListTransactionsRequest, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::args::Connect;
use crate::output::{self, Output, Table};

#[derive(Debug, Subcommand)]
pub enum TransactionCommand {
    /// Transactional ids with their coordinator, producer id and state (every broker's).
    List {
        /// Only ids in this state (repeatable): Empty, Ongoing, PrepareCommit, PrepareAbort,
        /// CompleteCommit, CompleteAbort.
        #[arg(long = "state")]
        states: Vec<String>,
        /// Only ids with this producer id (repeatable).
        #[arg(long = "producer-id")]
        producer_ids: Vec<i64>,
        /// Only transactions running for longer than this many milliseconds (KIP-994).
        #[arg(long, value_name = "MS")]
        duration_ms: Option<i64>,
    },
    /// A transactional id's coordinator, producer id and epoch, state, timeout, start and the
    /// partitions of its open transaction.
    Describe { transactional_id: String },
}

const LOAD_IN_PROGRESS: i16 = 14;
const NOT_COORDINATOR: i16 = 16;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn error_name(code: i16) -> String {
    format!("{} ({code})", fjord_client::error_name(code))
}

pub async fn run(
    connect: &Connect,
    output: Output,
    command: TransactionCommand,
) -> anyhow::Result<()> {
    let client = connect.client().await?;
    match command {
        TransactionCommand::List {
            states,
            producer_ids,
            duration_ms,
        } => {
            let md = client.metadata(Some(&[])).await?;
            let request = ListTransactionsRequest::default()
                .with_state_filters(states.iter().map(|s| sb(s)).collect())
                .with_producer_id_filters(producer_ids.iter().map(|p| ProducerId(*p)).collect())
                .with_duration_filter(duration_ms.unwrap_or(-1));
            let mut rows = Vec::new();
            for b in &md.brokers {
                let conn = client.broker_connection(b.node_id).await?;
                if duration_ms.is_some()
                    && conn
                        .version(kafka_protocol::messages::ApiKey::ListTransactions)
                        .is_none_or(|v| v < 1)
                {
                    bail!(
                        "broker {} cannot filter by duration (ListTransactions v1)",
                        b.node_id
                    );
                }
                // A partition of __transaction_state still loading: ask again (as Kafka's admin
                // client retries COORDINATOR_LOAD_IN_PROGRESS).
                let deadline = tokio::time::Instant::now() + connect.request_timeout;
                let mut resp = conn.send(&request).await?;
                while resp.error_code == LOAD_IN_PROGRESS && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    resp = conn.send(&request).await?;
                }
                if resp.error_code != 0 {
                    bail!(
                        "ListTransactions on broker {}: {}",
                        b.node_id,
                        error_name(resp.error_code)
                    );
                }
                if let Some(s) = resp.unknown_state_filters.first() {
                    bail!("unknown transaction state {:?}", s.as_str());
                }
                for t in resp.transaction_states {
                    rows.push((
                        t.transactional_id.0.to_string(),
                        b.node_id,
                        t.producer_id.0,
                        t.transaction_state.to_string(),
                    ));
                }
            }
            rows.sort();
            if output == Output::Json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(id, node, pid, state)| {
                        serde_json::json!({
                            "transactional_id": id, "coordinator": node,
                            "producer_id": pid, "state": state,
                        })
                    })
                    .collect();
                output::json(&serde_json::json!({ "transactions": list }));
                return Ok(());
            }
            let mut table =
                Table::new(&["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"]);
            for (id, node, pid, state) in rows {
                table.row(vec![id, node.to_string(), pid.to_string(), state]);
            }
            table.print();
        }
        TransactionCommand::Describe { transactional_id } => {
            let request = DescribeTransactionsRequest::default()
                .with_transactional_ids(vec![TransactionalId(sb(&transactional_id))]);
            // The coordinator may still be loading, or have moved: find it again.
            let deadline = tokio::time::Instant::now() + connect.request_timeout;
            let (coordinator, t) = loop {
                let conn = client.transaction_coordinator(&transactional_id).await?;
                let coordinator = client
                    .brokers()
                    .into_iter()
                    .find(|b| b.addr() == conn.addr())
                    .map_or(-1, |b| b.node_id);
                let resp = conn.send(&request).await?;
                let Some(t) = resp.transaction_states.into_iter().next() else {
                    bail!("the coordinator did not describe {transactional_id:?}");
                };
                if matches!(t.error_code, LOAD_IN_PROGRESS | NOT_COORDINATOR)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                break (coordinator, t);
            };
            if t.error_code != 0 {
                bail!(
                    "cannot describe transactional id {transactional_id:?}: {}",
                    error_name(t.error_code)
                );
            }
            let now = fjord_protocol::clock::now_ms();
            let start = t.transaction_start_time_ms;
            let duration = (start >= 0).then(|| now - start);
            let partitions: Vec<String> = t
                .topics
                .iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(move |p| format!("{}-{p}", tp.topic.0.as_str()))
                })
                .collect();
            if output == Output::Json {
                output::json(&serde_json::json!({
                    "coordinator": coordinator,
                    "transactional_id": t.transactional_id.0.as_str(),
                    "producer_id": t.producer_id.0,
                    "producer_epoch": t.producer_epoch,
                    "state": t.transaction_state.as_str(),
                    "timeout_ms": t.transaction_timeout_ms,
                    "start_time_ms": (start >= 0).then_some(start),
                    "duration_ms": duration,
                    "partitions": partitions,
                }));
                return Ok(());
            }
            let mut table = Table::new(&[
                "COORDINATOR",
                "TRANSACTIONAL-ID",
                "PRODUCER-ID",
                "PRODUCER-EPOCH",
                "STATE",
                "TIMEOUT-MS",
                "START-TIME-MS",
                "DURATION-MS",
                "PARTITIONS",
            ]);
            let none = || "None".to_string();
            table.row(vec![
                coordinator.to_string(),
                t.transactional_id.0.to_string(),
                t.producer_id.0.to_string(),
                t.producer_epoch.to_string(),
                t.transaction_state.to_string(),
                t.transaction_timeout_ms.to_string(),
                if start >= 0 {
                    start.to_string()
                } else {
                    none()
                },
                duration.map_or_else(none, |d| d.to_string()),
                partitions.join(","),
            ]);
            table.print();
        }
    }
    Ok(())
}
