//! `fjord quota set|describe`: client quotas (AlterClientQuotas, DescribeClientQuotas) on
//! user, client-id and (user, client-id) entities, `<default>` ones included, like
//! `kafka-configs.sh --entity-type users|clients`.

use anyhow::bail;
use clap::{Args, Subcommand};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;

use crate::args::Connect;
use crate::output::{self, Output, Table};

/// The quota keys Kafka knows for users and client ids.
const KEYS: &[&str] = &[
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
    "controller_mutation_rate",
];

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set or remove quotas of one entity (AlterClientQuotas).
    Set(SetArgs),
    /// Quotas of the entities that match (DescribeClientQuotas); all entities without flags.
    Describe(DescribeArgs),
}

/// Which entity: a user, a client id or both; `--default-user` / `--default-client-id` for
/// the `<default>` entities.
#[derive(Debug, Args)]
pub struct EntityArgs {
    /// The user (the principal's name, e.g. ANONYMOUS without authentication).
    #[arg(long, conflicts_with = "default_user")]
    user: Option<String>,
    /// The user `<default>` entity: every user without a quota of its own.
    #[arg(long)]
    default_user: bool,
    /// The client id.
    #[arg(long, conflicts_with = "default_client_id")]
    client_id: Option<String>,
    /// The client-id `<default>` entity.
    #[arg(long)]
    default_client_id: bool,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    entity: EntityArgs,
    /// Bytes per second the entity may produce (per broker).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    producer_byte_rate: Option<f64>,
    /// Bytes per second the entity may fetch as a consumer (per broker).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    consumer_byte_rate: Option<f64>,
    /// Percent of one request-handling thread (per broker).
    #[arg(long, value_name = "PERCENT", allow_negative_numbers = true)]
    request_percentage: Option<f64>,
    /// Partitions created or deleted per second.
    #[arg(long, value_name = "RATE", allow_negative_numbers = true)]
    controller_mutation_rate: Option<f64>,
    /// Remove these quota keys (repeatable, or comma-separated).
    #[arg(long, value_name = "KEY", value_delimiter = ',')]
    delete: Vec<String>,
    /// Check the change without making it.
    #[arg(long)]
    validate_only: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    entity: EntityArgs,
    /// Only entities with exactly the components given (no other user or client id).
    #[arg(long)]
    strict: bool,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn error_name(code: i16) -> String {
    format!("{} ({code})", fjord_client::error_name(code))
}

impl EntityArgs {
    /// (entity type, name): `None` is the default entity.
    fn components(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        if let Some(u) = &self.user {
            out.push(("user", Some(u.clone())));
        } else if self.default_user {
            out.push(("user", None));
        }
        if let Some(c) = &self.client_id {
            out.push(("client-id", Some(c.clone())));
        } else if self.default_client_id {
            out.push(("client-id", None));
        }
        out
    }
}

fn show_entity(parts: &[(String, Option<String>)]) -> String {
    parts
        .iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn run(connect: &Connect, output: Output, command: QuotaCommand) -> anyhow::Result<()> {
    let client = connect.client().await?;
    let conn = client.bootstrap_connection();
    match command {
        QuotaCommand::Set(a) => {
            let entity = a.entity.components();
            if entity.is_empty() {
                bail!("name an entity: --user, --default-user, --client-id or --default-client-id");
            }
            let mut ops = Vec::new();
            for (key, value) in [
                ("producer_byte_rate", a.producer_byte_rate),
                ("consumer_byte_rate", a.consumer_byte_rate),
                ("request_percentage", a.request_percentage),
                ("controller_mutation_rate", a.controller_mutation_rate),
            ] {
                if let Some(v) = value {
                    ops.push(OpData::default().with_key(sb(key)).with_value(v));
                }
            }
            for key in &a.delete {
                if !KEYS.contains(&key.as_str()) {
                    bail!("unknown quota key {key:?} (one of {})", KEYS.join(", "));
                }
                ops.push(OpData::default().with_key(sb(key)).with_remove(true));
            }
            if ops.is_empty() {
                bail!("nothing to change: give a rate (e.g. --producer-byte-rate 1048576) or --delete KEY");
            }
            let request = AlterClientQuotasRequest::default()
                .with_validate_only(a.validate_only)
                .with_entries(vec![EntryData::default()
                    .with_entity(
                        entity
                            .iter()
                            .map(|(t, n)| {
                                EntityData::default()
                                    .with_entity_type(sb(t))
                                    .with_entity_name(n.as_deref().map(sb))
                            })
                            .collect(),
                    )
                    .with_ops(ops)]);
            let resp = conn.send(&request).await?;
            let shown = show_entity(
                &entity
                    .iter()
                    .map(|(t, n)| (t.to_string(), n.clone()))
                    .collect::<Vec<_>>(),
            );
            for e in &resp.entries {
                if e.error_code != 0 {
                    bail!(
                        "quotas of {shown}: {}: {}",
                        error_name(e.error_code),
                        e.error_message.as_deref().unwrap_or("")
                    );
                }
            }
            if output == Output::Json {
                output::json(&serde_json::json!({
                    "entity": shown, "validate_only": a.validate_only, "altered": true
                }));
            } else if a.validate_only {
                outln!("Quotas of {shown} are valid (not changed: --validate-only).");
            } else {
                outln!("Quotas of {shown} changed.");
            }
        }
        QuotaCommand::Describe(a) => {
            let components = a
                .entity
                .components()
                .into_iter()
                .map(|(t, n)| {
                    let c = ComponentData::default().with_entity_type(sb(t));
                    match n {
                        Some(n) => c.with_match_type(0).with_match(Some(sb(&n))),
                        None => c.with_match_type(1).with_match(None),
                    }
                })
                .collect();
            let request = DescribeClientQuotasRequest::default()
                .with_components(components)
                .with_strict(a.strict);
            let resp = conn.send(&request).await?;
            if resp.error_code != 0 {
                bail!(
                    "DescribeClientQuotas: {}: {}",
                    error_name(resp.error_code),
                    resp.error_message.as_deref().unwrap_or("")
                );
            }
            let mut rows: Vec<(String, Vec<(String, f64)>)> = resp
                .entries
                .unwrap_or_default()
                .into_iter()
                .map(|e| {
                    let parts: Vec<(String, Option<String>)> = e
                        .entity
                        .iter()
                        .map(|c| {
                            (
                                c.entity_type.to_string(),
                                c.entity_name.as_ref().map(|n| n.to_string()),
                            )
                        })
                        .collect();
                    let values = e
                        .values
                        .iter()
                        .map(|v| (v.key.to_string(), v.value))
                        .collect();
                    (show_entity(&parts), values)
                })
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            if output == Output::Json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(entity, values)| {
                        let quotas: serde_json::Map<String, serde_json::Value> = values
                            .iter()
                            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                            .collect();
                        serde_json::json!({ "entity": entity, "quotas": quotas })
                    })
                    .collect();
                output::json(&serde_json::json!({ "quotas": list }));
                return Ok(());
            }
            let mut table = Table::new(&["ENTITY", "KEY", "VALUE"]);
            for (entity, values) in rows {
                for (k, v) in values {
                    table.row(vec![entity.clone(), k, v.to_string()]);
                }
            }
            table.print();
        }
    }
    Ok(())
}
