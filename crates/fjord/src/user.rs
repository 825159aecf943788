//! `fjord user scram set|list|delete`: SCRAM credentials (AlterUserScramCredentials,
//! DescribeUserScramCredentials, KIP-554), like `kafka-configs.sh --entity-type users
//! --alter --add-config 'SCRAM-SHA-512=[password=...]'`. The password is salted here; only the
//! salt and the salted password reach the broker.

use anyhow::bail;
use bytes::Bytes;
use clap::{Args, Subcommand};
use fjord_security::sasl::scram::{self, ScramMechanism, DEFAULT_ITERATIONS};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::args::Connect;
use crate::output::{self, Output, Table};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// SCRAM credentials: set, list, delete.
    #[command(subcommand)]
    Scram(ScramCommand),
}

#[derive(Debug, Subcommand)]
pub enum ScramCommand {
    /// Create or replace a user's credential for one mechanism.
    Set(SetArgs),
    /// Users with SCRAM credentials, with mechanisms and iterations (never keys).
    List(ListArgs),
    /// Delete a user's credential for one mechanism.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The user name.
    #[arg(long)]
    user: String,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, default_value = "SCRAM-SHA-512", value_parser = mechanism)]
    mechanism: ScramMechanism,
    /// The password (or FJORD_SCRAM_PASSWORD, which keeps it out of the process list).
    #[arg(long, env = "FJORD_SCRAM_PASSWORD", hide_env_values = true)]
    password: String,
    /// PBKDF2 iterations, 4096 to 16384.
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    iterations: u32,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these users (repeatable, or comma-separated); all users without it.
    #[arg(long, value_delimiter = ',')]
    user: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[arg(long)]
    user: String,
    #[arg(long, default_value = "SCRAM-SHA-512", value_parser = mechanism)]
    mechanism: ScramMechanism,
}

fn mechanism(s: &str) -> Result<ScramMechanism, String> {
    ScramMechanism::from_name(&s.to_ascii_uppercase())
        .ok_or_else(|| format!("expected SCRAM-SHA-256 or SCRAM-SHA-512, got {s:?}"))
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn error_name(code: i16) -> String {
    format!("{} ({code})", fjord_client::error_name(code))
}

pub async fn run(connect: &Connect, output: Output, command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Scram(command) = command;
    let client = connect.client().await?;
    let conn = client.bootstrap_connection();
    match command {
        ScramCommand::Set(a) => {
            let salt = scram::random_salt();
            let salted = a
                .mechanism
                .salted_password(a.password.as_bytes(), &salt, a.iterations);
            let request = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                ScramCredentialUpsertion::default()
                    .with_name(sb(&a.user))
                    .with_mechanism(a.mechanism.type_code())
                    .with_iterations(a.iterations as i32)
                    .with_salt(Bytes::from(salt))
                    .with_salted_password(Bytes::from(salted)),
            ]);
            altered(
                conn.send(&request).await?.results,
                &a.user,
                a.mechanism,
                "set",
                output,
            )?;
        }
        ScramCommand::Delete(a) => {
            let request = AlterUserScramCredentialsRequest::default().with_deletions(vec![
                ScramCredentialDeletion::default()
                    .with_name(sb(&a.user))
                    .with_mechanism(a.mechanism.type_code()),
            ]);
            altered(
                conn.send(&request).await?.results,
                &a.user,
                a.mechanism,
                "deleted",
                output,
            )?;
        }
        ScramCommand::List(a) => {
            let users = (!a.user.is_empty()).then(|| {
                a.user
                    .iter()
                    .map(|u| UserName::default().with_name(sb(u)))
                    .collect()
            });
            let resp = conn
                .send(&DescribeUserScramCredentialsRequest::default().with_users(users))
                .await?;
            if resp.error_code != 0 {
                bail!(
                    "DescribeUserScramCredentials: {}: {}",
                    error_name(resp.error_code),
                    resp.error_message.as_deref().unwrap_or("")
                );
            }
            let mut rows = Vec::new();
            for r in &resp.results {
                if r.error_code != 0 {
                    bail!(
                        "user {}: {}: {}",
                        r.user,
                        error_name(r.error_code),
                        r.error_message.as_deref().unwrap_or("")
                    );
                }
                for c in &r.credential_infos {
                    let mech = ScramMechanism::from_type_code(c.mechanism)
                        .map(|m| m.name().to_string())
                        .unwrap_or_else(|| format!("UNKNOWN({})", c.mechanism));
                    rows.push((r.user.to_string(), mech, c.iterations));
                }
            }
            rows.sort();
            if output == Output::Json {
                let list: Vec<_> = rows
                    .iter()
                    .map(
                        |(u, m, i)| serde_json::json!({"user": u, "mechanism": m, "iterations": i}),
                    )
                    .collect();
                output::json(&serde_json::json!({ "credentials": list }));
                return Ok(());
            }
            let mut table = Table::new(&["USER", "MECHANISM", ">ITERATIONS"]);
            for (u, m, i) in rows {
                table.row(vec![u, m, i.to_string()]);
            }
            table.print();
        }
    }
    Ok(())
}

fn altered(
    results: Vec<kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult>,
    user: &str,
    mech: ScramMechanism,
    what: &str,
    output: Output,
) -> anyhow::Result<()> {
    for r in &results {
        if r.error_code != 0 {
            bail!(
                "{} credential of user {user}: {}: {}",
                mech.name(),
                error_name(r.error_code),
                r.error_message.as_deref().unwrap_or("")
            );
        }
    }
    if output == Output::Json {
        output::json(&serde_json::json!({"user": user, "mechanism": mech.name(), what: true}));
    } else {
        outln!("{} credential of user {user} {what}.", mech.name());
    }
    Ok(())
}
