//! Authorization: the per-API checks Kafka's `KafkaApis` makes, against the ACLs in this
//! broker's image, with an audit log and a metric.
//!
//! Enabled by a non-empty `authorizer.class.name` (Kafka's
//! `org.apache.kafka.metadata.authorizer.StandardAuthorizer`, or anything else: there is one
//! authorizer); without it every check allows, as before. The decisions are
//! `fjord_security::authorizer` (pure); this module supplies the principal and host of the
//! connection, reads the ACLs under the image lock, and records the decision:
//!
//! - audit log under the tracing target `fjord::audit`: every denial at INFO (principal, host,
//!   operation, resource, the ACL or rule that decided), every allow at DEBUG, as Kafka's
//!   `kafka.authorizer.logger`. Checks that only filter what a client sees (topics a full
//!   Metadata request lists, KIP-430 authorized operations) are not logged, as in Kafka.
//! - `fjord_authorizer_decisions_total{result, resource_type}`.
//!
//! Brokers talk to each other as clients of the data listener (replica fetches, transaction
//! markers, verification of transactional produce) with the principal of their connection, on
//! plaintext `User:ANONYMOUS`: as in Kafka, the broker principal must be in `super.users` (or
//! be granted CLUSTER_ACTION on the cluster) for replication to work with ACLs on.

use std::collections::HashSet;

use fjord_protocol::error::ErrorCode;
use fjord_security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use fjord_security::authorizer::{Authorizer, AuthorizerConfig, Decision, Reason};
use prometheus::{IntCounterVec, Opts, Registry};

use crate::broker::Broker;
use crate::handlers::Ctx;

/// `authorizer.class.name`, `super.users`, `allow.everyone.if.no.acl.found` from the broker's
/// properties; `None` when no authorizer is configured.
pub(crate) fn config(get: &impl Fn(&str) -> String) -> Result<Option<AuthorizerConfig>, String> {
    let allow_everyone = match get("allow.everyone.if.no.acl.found")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "true" => true,
        "false" => false,
        other => {
            return Err(format!(
            "invalid value \"{other}\" for allow.everyone.if.no.acl.found: expected true or false"
        ))
        }
    };
    let super_users = AuthorizerConfig::parse_super_users(&get("super.users"));
    if let Some(bad) = super_users
        .iter()
        .find(|p| fjord_security::KafkaPrincipal::parse(p).is_none())
    {
        return Err(format!(
            "invalid value \"{bad}\" in super.users: expected principals such as User:admin separated by ';'"
        ));
    }
    if get("authorizer.class.name").trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(AuthorizerConfig {
        super_users,
        allow_everyone_if_no_acl_found: allow_everyone,
    }))
}

/// The authorizer's decisions, by `result` (allowed, denied) and `resource_type`.
pub struct AuthzMetrics {
    pub decisions: IntCounterVec,
}

impl AuthzMetrics {
    pub fn new(registry: &Registry) -> AuthzMetrics {
        let decisions = IntCounterVec::new(
            Opts::new(
                "authorizer_decisions_total",
                "Authorization decisions (ACL checks), by result (allowed, denied) and resource type",
            ),
            &["result", "resource_type"],
        )
        .expect("metric");
        for result in ["allowed", "denied"] {
            for rt in ["topic", "group", "cluster", "transactional_id"] {
                decisions.with_label_values(&[result, rt]);
            }
        }
        registry
            .register(Box::new(decisions.clone()))
            .expect("unique metric");
        AuthzMetrics { decisions }
    }
}

/// Whether an authorizer is configured.
pub fn enabled(b: &Broker) -> bool {
    b.config.authorizer.is_some()
}

/// The peer's IP address as ACL hosts name it (`127.0.0.1`).
fn host(ctx: &Ctx) -> &str {
    ctx.client_host
        .strip_prefix('/')
        .unwrap_or(&ctx.client_host)
}

fn decide(
    b: &Broker,
    cfg: &AuthorizerConfig,
    ctx: &Ctx,
    op: AclOperation,
    rt: ResourceType,
    name: &str,
) -> Decision {
    b.with_image(|img| {
        Authorizer {
            config: cfg,
            acls: img.acls().index(),
        }
        .authorize(&ctx.principal, host(ctx), op, rt, name)
    })
}

fn record(b: &Broker, ctx: &Ctx, op: AclOperation, rt: ResourceType, name: &str, d: &Decision) {
    // Every check of a request passes here (per topic of a produce or fetch): the metric
    // label and the audit fields are built without allocating, and the rule is only
    // formatted when its log line is enabled (the allow line is DEBUG).
    let result = if d.allowed { "allowed" } else { "denied" };
    b.metrics
        .authz
        .decisions
        .with_label_values(&[result, resource_label(rt)])
        .inc();
    let rule = Rule(&d.reason);
    if d.allowed {
        tracing::debug!(
            target: "fjord::audit",
            principal = %ctx.principal,
            host = host(ctx),
            operation = op.name(),
            resource_type = rt.name(),
            resource = name,
            decision = "ALLOWED",
            rule = %rule,
            "authorization allowed"
        );
    } else {
        tracing::info!(
            target: "fjord::audit",
            principal = %ctx.principal,
            host = host(ctx),
            operation = op.name(),
            resource_type = rt.name(),
            resource = name,
            decision = "DENIED",
            rule = %rule,
            "authorization denied"
        );
    }
}

/// The `resource_type` label of `fjord_authorizer_decisions_total`.
fn resource_label(rt: ResourceType) -> &'static str {
    match rt {
        ResourceType::Unknown => "unknown",
        ResourceType::Any => "any",
        ResourceType::Topic => "topic",
        ResourceType::Group => "group",
        ResourceType::Cluster => "cluster",
        ResourceType::TransactionalId => "transactional_id",
        ResourceType::DelegationToken => "delegation_token",
        ResourceType::User => "user",
    }
}

/// Why a decision was taken, as the audit line says it.
struct Rule<'a>(&'a Reason);

impl std::fmt::Display for Rule<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Reason::SuperUser => f.write_str("super user"),
            Reason::Acl(acl) => write!(f, "ACL {acl}"),
            Reason::NoAclFound => f.write_str("no ACL found for the resource"),
            Reason::NoMatchingAllow => f.write_str("no matching ALLOW ACL"),
        }
    }
}

/// The gate of CreateAcls and DeleteAcls: SECURITY_DISABLED without an authorizer, then ALTER
/// on the cluster. `Some` is the error every entry of the request is answered with.
pub(crate) fn acl_admin_refusal(b: &Broker, ctx: &Ctx) -> Option<(ErrorCode, &'static str)> {
    if !enabled(b) {
        return Some((ErrorCode::SecurityDisabled, "No Authorizer is configured."));
    }
    if !cluster(b, ctx, AclOperation::Alter) {
        return Some((
            ErrorCode::ClusterAuthorizationFailed,
            "Cluster authorization failed.",
        ));
    }
    None
}

/// May this request's principal do `op` on resource `name` of type `rt`? Audited.
pub fn allowed(b: &Broker, ctx: &Ctx, op: AclOperation, rt: ResourceType, name: &str) -> bool {
    let Some(cfg) = &b.config.authorizer else {
        return true;
    };
    let d = decide(b, cfg, ctx, op, rt, name);
    record(b, ctx, op, rt, name, &d);
    d.allowed
}

/// [`allowed`] without the audit log line (filtering what a client sees, as Kafka's
/// `logIfDenied = false`); still counted.
pub fn allowed_quietly(
    b: &Broker,
    ctx: &Ctx,
    op: AclOperation,
    rt: ResourceType,
    name: &str,
) -> bool {
    let Some(cfg) = &b.config.authorizer else {
        return true;
    };
    decide(b, cfg, ctx, op, rt, name).allowed
}

pub fn cluster(b: &Broker, ctx: &Ctx, op: AclOperation) -> bool {
    allowed(b, ctx, op, ResourceType::Cluster, CLUSTER_NAME)
}

pub fn topic(b: &Broker, ctx: &Ctx, op: AclOperation, name: &str) -> bool {
    allowed(b, ctx, op, ResourceType::Topic, name)
}

pub fn group(b: &Broker, ctx: &Ctx, op: AclOperation, name: &str) -> bool {
    allowed(b, ctx, op, ResourceType::Group, name)
}

pub fn transactional_id(b: &Broker, ctx: &Ctx, op: AclOperation, name: &str) -> bool {
    allowed(b, ctx, op, ResourceType::TransactionalId, name)
}

/// The names of `names` the principal may do `op` on (each audited once, even if repeated).
pub fn filter<'a>(
    b: &Broker,
    ctx: &Ctx,
    op: AclOperation,
    rt: ResourceType,
    names: impl IntoIterator<Item = &'a str>,
) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut ok = HashSet::new();
    for n in names {
        if seen.insert(n) && allowed(b, ctx, op, rt, n) {
            ok.insert(n.to_string());
        }
    }
    ok
}

/// DescribeConfigs / AlterConfigs / IncrementalAlterConfigs: `op` (DESCRIBE_CONFIGS or
/// ALTER_CONFIGS) on the config resource (Kafka's `ConfigResource.Type` code): a topic needs it
/// on the topic, a group on the group, brokers and broker loggers on the cluster. The error
/// when denied.
pub fn config_resource(
    b: &Broker,
    ctx: &Ctx,
    op: AclOperation,
    config_resource_type: i8,
    name: &str,
) -> Result<(), ErrorCode> {
    let (rt, name, code) = match config_resource_type {
        2 => (
            ResourceType::Topic,
            name,
            ErrorCode::TopicAuthorizationFailed,
        ),
        32 => (
            ResourceType::Group,
            name,
            ErrorCode::GroupAuthorizationFailed,
        ),
        _ => (
            ResourceType::Cluster,
            CLUSTER_NAME,
            ErrorCode::ClusterAuthorizationFailed,
        ),
    };
    if allowed(b, ctx, op, rt, name) {
        Ok(())
    } else {
        Err(code)
    }
}

/// Split `items` into those whose resource (`name` of each) the principal may do `op` on, and
/// the others, keeping their order (the per-topic split of Kafka's handlers).
pub fn split<T>(
    b: &Broker,
    ctx: &Ctx,
    op: AclOperation,
    rt: ResourceType,
    items: Vec<T>,
    name: impl Fn(&T) -> &str,
) -> (Vec<T>, Vec<T>) {
    if !enabled(b) {
        return (items, Vec::new());
    }
    let ok = filter(b, ctx, op, rt, items.iter().map(&name));
    items.into_iter().partition(|t| ok.contains(name(t)))
}

/// KIP-430: the operations the principal may do on a resource (every supported operation of
/// its type when no authorizer is configured, as Kafka's `AclEntry.supportedOperations`).
pub fn authorized_operations(b: &Broker, ctx: &Ctx, rt: ResourceType, name: &str) -> i32 {
    let Some(cfg) = &b.config.authorizer else {
        return AclOperation::bit_field(AclOperation::supported_by(rt).iter().copied());
    };
    b.with_image(|img| {
        Authorizer {
            config: cfg,
            acls: img.acls().index(),
        }
        .authorized_operations(&ctx.principal, host(ctx), rt, name)
    })
}

/// Idempotent produce without a transactional id (InitProducerId): IDEMPOTENT_WRITE on the
/// cluster, or WRITE on at least one topic (Kafka's KIP-679 rule).
pub fn idempotent_write(b: &Broker, ctx: &Ctx) -> bool {
    let Some(cfg) = &b.config.authorizer else {
        return true;
    };
    if allowed_quietly(
        b,
        ctx,
        AclOperation::IdempotentWrite,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) {
        return true;
    }
    let by_type = b.with_image(|img| {
        Authorizer {
            config: cfg,
            acls: img.acls().index(),
        }
        .authorize_by_resource_type(
            &ctx.principal,
            host(ctx),
            AclOperation::Write,
            ResourceType::Topic,
        )
    });
    if !by_type {
        // Audit the denial as the cluster check Kafka reports.
        cluster(b, ctx, AclOperation::IdempotentWrite);
    }
    by_type
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys() {
        let props = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_else(|| {
                        if k == "allow.everyone.if.no.acl.found" {
                            "false".into()
                        } else {
                            String::new()
                        }
                    })
            }
        };
        assert_eq!(config(&props(&[])).unwrap(), None);
        let c = config(&props(&[
            (
                "authorizer.class.name",
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            ),
            ("super.users", "User:admin;User:ANONYMOUS"),
        ]))
        .unwrap()
        .unwrap();
        assert!(c.super_users.contains("User:ANONYMOUS") && c.super_users.contains("User:admin"));
        assert!(!c.allow_everyone_if_no_acl_found);
        assert!(config(&props(&[("super.users", "admin")])).is_err());
        assert!(config(&props(&[("allow.everyone.if.no.acl.found", "yes")])).is_err());
    }
}
