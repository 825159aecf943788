//! `fjord acl add|list|remove`: ACLs through CreateAcls, DescribeAcls and DeleteAcls, with the
//! flags of Kafka's `kafka-acls.sh` (`--allow-principal`, `--deny-principal`, `--allow-host`,
//! `--deny-host`, `--operation`, `--topic`, `--group`, `--cluster`, `--transactional-id`,
//! `--resource-pattern-type`, `--producer`, `--consumer`, `--idempotent`, `--principal`).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use fjord_security::acl::{
    AclBinding, AclBindingFilter, AclOperation, PatternType, PermissionType, ResourcePattern,
    ResourceType, CLUSTER_NAME, WILDCARD_HOST,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;

use crate::args::Connect;
use crate::output::{self, Output, Table};

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Create ACLs: every principal × host × operation × resource given.
    Add(AclArgs),
    /// List ACLs (all of them without a resource or principal).
    List(AclArgs),
    /// Delete the ACLs that match (every ACL of the resources without a principal).
    Remove(AclArgs),
}

#[derive(Debug, Args)]
pub struct AclArgs {
    /// Principals allowed (`User:alice`, `User:*` for everyone); repeatable.
    #[arg(long = "allow-principal")]
    allow_principal: Vec<String>,
    /// Principals denied; repeatable.
    #[arg(long = "deny-principal")]
    deny_principal: Vec<String>,
    /// Hosts (IP addresses) the allow ACLs apply to; `*` (every host) without it.
    #[arg(long = "allow-host")]
    allow_host: Vec<String>,
    /// Hosts the deny ACLs apply to; `*` without it.
    #[arg(long = "deny-host")]
    deny_host: Vec<String>,
    /// Operations: Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, All; repeatable. All without it (any,
    /// for list and remove).
    #[arg(long = "operation", value_parser = operation)]
    operation: Vec<AclOperation>,
    /// Topics (`*` for all); repeatable.
    #[arg(long)]
    topic: Vec<String>,
    /// Consumer groups (`*` for all); repeatable.
    #[arg(long)]
    group: Vec<String>,
    /// The cluster resource.
    #[arg(long)]
    cluster: bool,
    /// Transactional ids (`*` for all); repeatable.
    #[arg(long = "transactional-id")]
    transactional_id: Vec<String>,
    /// LITERAL or PREFIXED (for list and remove also ANY or MATCH).
    #[arg(long = "resource-pattern-type", default_value = "LITERAL", value_parser = pattern_type)]
    resource_pattern_type: PatternType,
    /// Producer ACLs: WRITE, DESCRIBE and CREATE on the topics (and WRITE, DESCRIBE on the
    /// transactional ids, IDEMPOTENT_WRITE on the cluster with --idempotent).
    #[arg(long)]
    producer: bool,
    /// With --producer: IDEMPOTENT_WRITE on the cluster.
    #[arg(long)]
    idempotent: bool,
    /// Consumer ACLs: READ and DESCRIBE on the topics, READ on the groups.
    #[arg(long)]
    consumer: bool,
    /// list: only the ACLs of this principal.
    #[arg(long)]
    principal: Option<String>,
}

fn operation(s: &str) -> Result<AclOperation, String> {
    AclOperation::parse(s)
        .filter(|op| !matches!(op, AclOperation::Unknown | AclOperation::Any))
        .ok_or_else(|| format!("unknown operation {s:?}"))
}

fn pattern_type(s: &str) -> Result<PatternType, String> {
    PatternType::parse(s)
        .filter(|p| *p != PatternType::Unknown)
        .ok_or_else(|| format!("expected LITERAL, PREFIXED, ANY or MATCH, got {s:?}"))
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn error_name(code: i16) -> String {
    format!("{} ({code})", fjord_client::error_name(code))
}

impl AclArgs {
    /// Every resource named, with the operations it gets from --producer / --consumer.
    fn resources(&self) -> Vec<(ResourceType, String, Vec<AclOperation>)> {
        use AclOperation::*;
        let mut out = Vec::new();
        let explicit = self.operation.clone();
        let pick = |preset: Vec<AclOperation>| {
            if self.producer || self.consumer {
                preset
            } else {
                explicit.clone()
            }
        };
        for t in &self.topic {
            let mut ops = Vec::new();
            if self.producer {
                ops.extend([Write, Describe, Create]);
            }
            if self.consumer {
                ops.extend([Read, Describe]);
            }
            ops.dedup();
            out.push((ResourceType::Topic, t.clone(), pick(ops)));
        }
        for g in &self.group {
            out.push((ResourceType::Group, g.clone(), pick(vec![Read])));
        }
        for id in &self.transactional_id {
            out.push((
                ResourceType::TransactionalId,
                id.clone(),
                pick(vec![Write, Describe]),
            ));
        }
        if self.cluster || (self.producer && self.idempotent) {
            out.push((
                ResourceType::Cluster,
                CLUSTER_NAME.to_string(),
                pick(vec![IdempotentWrite]),
            ));
        }
        out
    }

    /// The ACLs `add` creates.
    fn bindings(&self) -> anyhow::Result<Vec<AclBinding>> {
        if !matches!(
            self.resource_pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            bail!("--resource-pattern-type must be LITERAL or PREFIXED to add ACLs");
        }
        let resources = self.resources();
        if resources.is_empty() {
            bail!("name a resource: --topic, --group, --cluster or --transactional-id");
        }
        if self.allow_principal.is_empty() && self.deny_principal.is_empty() {
            bail!("name a principal: --allow-principal or --deny-principal");
        }
        let star = vec![WILDCARD_HOST.to_string()];
        let grants = [
            (
                &self.allow_principal,
                &self.allow_host,
                PermissionType::Allow,
            ),
            (&self.deny_principal, &self.deny_host, PermissionType::Deny),
        ];
        let mut out = Vec::new();
        for (rt, name, ops) in &resources {
            let ops = if ops.is_empty() {
                vec![AclOperation::All]
            } else {
                ops.clone()
            };
            for (principals, hosts, permission) in &grants {
                let hosts = if hosts.is_empty() { &star } else { *hosts };
                for p in principals.iter() {
                    check_principal(p)?;
                    for h in hosts {
                        for op in &ops {
                            out.push(AclBinding {
                                pattern: ResourcePattern::new(
                                    *rt,
                                    name.clone(),
                                    self.resource_pattern_type,
                                ),
                                entry: fjord_security::acl::AccessControlEntry {
                                    principal: p.clone(),
                                    host: h.clone(),
                                    operation: *op,
                                    permission: *permission,
                                },
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The filters `list` and `remove` send: per resource (or any resource), per principal
    /// given (or any principal).
    fn filters(&self) -> anyhow::Result<Vec<AclBindingFilter>> {
        let mut patterns: Vec<(ResourceType, Option<String>, Vec<AclOperation>)> = self
            .resources()
            .into_iter()
            .map(|(rt, n, ops)| (rt, Some(n), ops))
            .collect();
        if patterns.is_empty() {
            patterns.push((ResourceType::Any, None, self.operation.clone()));
        }
        let mut entries: Vec<(Option<String>, Vec<String>, PermissionType)> = Vec::new();
        for p in &self.allow_principal {
            entries.push((
                Some(p.clone()),
                self.allow_host.clone(),
                PermissionType::Allow,
            ));
        }
        for p in &self.deny_principal {
            entries.push((
                Some(p.clone()),
                self.deny_host.clone(),
                PermissionType::Deny,
            ));
        }
        if let Some(p) = &self.principal {
            entries.push((Some(p.clone()), Vec::new(), PermissionType::Any));
        }
        if entries.is_empty() {
            entries.push((None, Vec::new(), PermissionType::Any));
        }
        let mut out = Vec::new();
        for (rt, name, ops) in &patterns {
            let ops = if ops.is_empty() {
                vec![AclOperation::Any]
            } else {
                ops.clone()
            };
            for (principal, hosts, permission) in &entries {
                if let Some(p) = principal {
                    check_principal(p)?;
                }
                let hosts: Vec<Option<String>> = if hosts.is_empty() {
                    vec![None]
                } else {
                    hosts.iter().cloned().map(Some).collect()
                };
                for host in &hosts {
                    for op in &ops {
                        let mut f = AclBindingFilter::any();
                        f.pattern.resource_type = *rt;
                        f.pattern.name = name.clone();
                        f.pattern.pattern_type = if name.is_some() {
                            self.resource_pattern_type
                        } else {
                            PatternType::Any
                        };
                        f.entry.principal = principal.clone();
                        f.entry.host = host.clone();
                        f.entry.operation = *op;
                        f.entry.permission = *permission;
                        out.push(f);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn check_principal(p: &str) -> anyhow::Result<()> {
    if fjord_security::KafkaPrincipal::parse(p).is_none() {
        bail!("principal {p:?} is not of the form Type:name (e.g. User:alice)");
    }
    Ok(())
}

fn wire_filter(f: &AclBindingFilter) -> DeleteAclsFilter {
    DeleteAclsFilter::default()
        .with_resource_type_filter(f.pattern.resource_type.code())
        .with_resource_name_filter(f.pattern.name.as_deref().map(sb))
        .with_pattern_type_filter(f.pattern.pattern_type.code())
        .with_principal_filter(f.entry.principal.as_deref().map(sb))
        .with_host_filter(f.entry.host.as_deref().map(sb))
        .with_operation(f.entry.operation.code())
        .with_permission_type(f.entry.permission.code())
}

/// One ACL from the wire's codes and strings.
fn binding(
    rt: i8,
    name: &str,
    pt: i8,
    principal: &str,
    host: &str,
    op: i8,
    perm: i8,
) -> AclBinding {
    AclBinding {
        pattern: ResourcePattern::new(
            ResourceType::from_code(rt),
            name,
            PatternType::from_code(pt),
        ),
        entry: fjord_security::acl::AccessControlEntry {
            principal: principal.to_string(),
            host: host.to_string(),
            operation: AclOperation::from_code(op),
            permission: PermissionType::from_code(perm),
        },
    }
}

fn print(acls: &[AclBinding], output: Output) {
    if output == Output::Json {
        let list: Vec<_> = acls
            .iter()
            .map(|a| {
                serde_json::json!({
                    "resource_type": a.pattern.resource_type.name(),
                    "resource_name": a.pattern.name,
                    "pattern_type": a.pattern.pattern_type.name(),
                    "principal": a.entry.principal,
                    "host": a.entry.host,
                    "operation": a.entry.operation.name(),
                    "permission_type": a.entry.permission.name(),
                })
            })
            .collect();
        output::json(&serde_json::json!({ "acls": list }));
        return;
    }
    let mut table = Table::new(&[
        "RESOURCE_TYPE",
        "RESOURCE",
        "PATTERN",
        "PRINCIPAL",
        "HOST",
        "OPERATION",
        "PERMISSION",
    ]);
    for a in acls {
        table.row(vec![
            a.pattern.resource_type.name().to_string(),
            a.pattern.name.clone(),
            a.pattern.pattern_type.name().to_string(),
            a.entry.principal.clone(),
            a.entry.host.clone(),
            a.entry.operation.name().to_string(),
            a.entry.permission.name().to_string(),
        ]);
    }
    table.print();
}

pub async fn run(connect: &Connect, output: Output, command: AclCommand) -> anyhow::Result<()> {
    let client = connect.client().await?;
    let conn = client.bootstrap_connection();
    match command {
        AclCommand::Add(a) => {
            let acls = a.bindings()?;
            let creations = acls
                .iter()
                .map(|b| {
                    AclCreation::default()
                        .with_resource_type(b.pattern.resource_type.code())
                        .with_resource_name(sb(&b.pattern.name))
                        .with_resource_pattern_type(b.pattern.pattern_type.code())
                        .with_principal(sb(&b.entry.principal))
                        .with_host(sb(&b.entry.host))
                        .with_operation(b.entry.operation.code())
                        .with_permission_type(b.entry.permission.code())
                })
                .collect();
            let resp = conn
                .send(&CreateAclsRequest::default().with_creations(creations))
                .await
                .context("CreateAcls")?;
            for (r, b) in resp.results.iter().zip(&acls) {
                if r.error_code != 0 {
                    bail!(
                        "ACL {b}: {}: {}",
                        error_name(r.error_code),
                        r.error_message.as_deref().unwrap_or("")
                    );
                }
            }
            if output != Output::Json {
                outln!("Created {} ACL(s):", acls.len());
            }
            print(&acls, output);
        }
        AclCommand::List(a) => {
            let mut acls = Vec::new();
            for f in a.filters()? {
                let w = wire_filter(&f);
                let req = DescribeAclsRequest::default()
                    .with_resource_type_filter(w.resource_type_filter)
                    .with_resource_name_filter(w.resource_name_filter)
                    .with_pattern_type_filter(w.pattern_type_filter)
                    .with_principal_filter(w.principal_filter)
                    .with_host_filter(w.host_filter)
                    .with_operation(w.operation)
                    .with_permission_type(w.permission_type);
                let resp = conn.send(&req).await.context("DescribeAcls")?;
                if resp.error_code != 0 {
                    bail!(
                        "DescribeAcls: {}: {}",
                        error_name(resp.error_code),
                        resp.error_message.as_deref().unwrap_or("")
                    );
                }
                for r in &resp.resources {
                    for e in &r.acls {
                        acls.push(binding(
                            r.resource_type,
                            &r.resource_name,
                            r.pattern_type,
                            &e.principal,
                            &e.host,
                            e.operation,
                            e.permission_type,
                        ));
                    }
                }
            }
            acls.sort();
            acls.dedup();
            print(&acls, output);
        }
        AclCommand::Remove(a) => {
            if a.resources().is_empty() {
                bail!("name a resource: --topic, --group, --cluster or --transactional-id");
            }
            let filters: Vec<DeleteAclsFilter> = a.filters()?.iter().map(wire_filter).collect();
            let resp = conn
                .send(&DeleteAclsRequest::default().with_filters(filters))
                .await
                .context("DeleteAcls")?;
            let mut deleted = Vec::new();
            for r in &resp.filter_results {
                if r.error_code != 0 {
                    bail!(
                        "DeleteAcls: {}: {}",
                        error_name(r.error_code),
                        r.error_message.as_deref().unwrap_or("")
                    );
                }
                for m in &r.matching_acls {
                    deleted.push(binding(
                        m.resource_type,
                        &m.resource_name,
                        m.pattern_type,
                        &m.principal,
                        &m.host,
                        m.operation,
                        m.permission_type,
                    ));
                }
            }
            deleted.sort();
            deleted.dedup();
            if output != Output::Json {
                outln!("Removed {} ACL(s):", deleted.len());
            }
            print(&deleted, output);
        }
    }
    Ok(())
}
