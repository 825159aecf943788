//! The authorizer as a pure function over an ACL set, with the semantics of Kafka's
//! `StandardAuthorizer` (`StandardAuthorizerData`):
//!
//! - a principal in `super.users` may do anything;
//! - the ACLs that apply to a resource are its LITERAL ACLs, the LITERAL `*` ACLs of its type,
//!   and the PREFIXED ACLs whose name is a prefix of the resource name;
//! - of those, an ACL matches when its principal is the caller's or `User:*`, its host is the
//!   caller's or `*`, and its operation is the requested one or ALL; an ALLOW ACL for READ,
//!   WRITE, DELETE or ALTER also allows DESCRIBE, and one for ALTER_CONFIGS also allows
//!   DESCRIBE_CONFIGS (DENY ACLs imply nothing);
//! - a matching DENY wins over any ALLOW;
//! - with no matching ALLOW the answer is DENY, except when no ACL at all applies to the
//!   resource and `allow.everyone.if.no.acl.found` is set.
//!
//! [`AclIndex`] keeps the ACLs by resource type and name (literal) and by prefix, so a check
//! looks at the ACLs of the resource only, however many ACLs there are.

use std::collections::{HashMap, HashSet};

use crate::acl::{
    AccessControlEntry, AclBinding, AclOperation, PatternType, PermissionType, ResourcePattern,
    ResourceType, WILDCARD_HOST, WILDCARD_PRINCIPAL, WILDCARD_RESOURCE,
};
use crate::principal::KafkaPrincipal;

/// The ACLs of one resource type.
#[derive(Debug, Clone, Default)]
struct TypeAcls {
    literal: HashMap<String, Vec<AccessControlEntry>>,
    prefixed: HashMap<String, Vec<AccessControlEntry>>,
}

/// Every ACL, indexed for [`Authorizer::authorize`].
#[derive(Debug, Clone, Default)]
pub struct AclIndex {
    by_type: HashMap<ResourceType, TypeAcls>,
    len: usize,
}

impl AclIndex {
    /// Add a binding; `false` (and nothing changes) if it is already there.
    pub fn add(&mut self, b: &AclBinding) -> bool {
        let t = self.by_type.entry(b.pattern.resource_type).or_default();
        let map = match b.pattern.pattern_type {
            PatternType::Prefixed => &mut t.prefixed,
            _ => &mut t.literal,
        };
        let entries = map.entry(b.pattern.name.clone()).or_default();
        if entries.contains(&b.entry) {
            return false;
        }
        entries.push(b.entry.clone());
        self.len += 1;
        true
    }

    /// Remove a binding; `false` if it was not there.
    pub fn remove(&mut self, b: &AclBinding) -> bool {
        let Some(t) = self.by_type.get_mut(&b.pattern.resource_type) else {
            return false;
        };
        let map = match b.pattern.pattern_type {
            PatternType::Prefixed => &mut t.prefixed,
            _ => &mut t.literal,
        };
        let Some(entries) = map.get_mut(&b.pattern.name) else {
            return false;
        };
        let Some(i) = entries.iter().position(|e| *e == b.entry) else {
            return false;
        };
        entries.swap_remove(i);
        if entries.is_empty() {
            map.remove(&b.pattern.name);
        }
        self.len -= 1;
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every binding (unordered).
    pub fn bindings(&self) -> impl Iterator<Item = AclBinding> + '_ {
        self.by_type.iter().flat_map(|(rt, t)| {
            let lit = t
                .literal
                .iter()
                .map(|(n, es)| (n, es, PatternType::Literal));
            let pre = t
                .prefixed
                .iter()
                .map(|(n, es)| (n, es, PatternType::Prefixed));
            lit.chain(pre).flat_map(move |(name, es, pt)| {
                es.iter().map(move |e| AclBinding {
                    pattern: ResourcePattern::new(*rt, name.clone(), pt),
                    entry: e.clone(),
                })
            })
        })
    }

    /// The ACLs that apply to resource `name` of type `rt`: its literal ACLs, then the
    /// prefixed ones, then the literal wildcard's (each with its pattern).
    fn applicable<'a>(
        &'a self,
        rt: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = (PatternType, &'a str, &'a AccessControlEntry)> + 'a {
        let t = self.by_type.get(&rt);
        let literal = t
            .and_then(|t| t.literal.get_key_value(name))
            .into_iter()
            .flat_map(|(n, es)| {
                es.iter()
                    .map(move |e| (PatternType::Literal, n.as_str(), e))
            });
        let prefixed = t
            .filter(|t| !t.prefixed.is_empty())
            .into_iter()
            .flat_map(move |t| {
                name.char_indices()
                    .map(|(i, c)| i + c.len_utf8())
                    .filter_map(move |end| t.prefixed.get_key_value(&name[..end]))
            })
            .flat_map(|(n, es)| {
                es.iter()
                    .map(move |e| (PatternType::Prefixed, n.as_str(), e))
            });
        let wildcard = t
            .filter(|_| name != WILDCARD_RESOURCE)
            .and_then(|t| t.literal.get_key_value(WILDCARD_RESOURCE))
            .into_iter()
            .flat_map(|(n, es)| {
                es.iter()
                    .map(move |e| (PatternType::Literal, n.as_str(), e))
            });
        literal.chain(prefixed).chain(wildcard)
    }
}

/// The authorizer's settings: Kafka's `super.users` and `allow.everyone.if.no.acl.found`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    pub super_users: HashSet<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    /// `super.users` as Kafka writes it: principals separated by `;` (`User:admin;User:broker`).
    pub fn parse_super_users(s: &str) -> HashSet<String> {
        s.split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// What decided a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    SuperUser,
    /// A matching ACL (the DENY, or the ALLOW).
    Acl(AclBinding),
    /// No ACL applies to the resource; `allow.everyone.if.no.acl.found` decided.
    NoAclFound,
    /// ACLs apply to the resource but none allows this principal, host and operation.
    NoMatchingAllow,
}

/// An authorization decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

/// A pure authorizer: settings over an [`AclIndex`].
#[derive(Debug, Clone, Copy)]
pub struct Authorizer<'a> {
    pub config: &'a AuthorizerConfig,
    pub acls: &'a AclIndex,
}

/// Whether an ACL's operation covers `op` (Kafka's `findResult`).
fn operation_matches(acl: &AccessControlEntry, op: AclOperation) -> bool {
    use AclOperation::*;
    if acl.operation == All || acl.operation == op {
        return true;
    }
    if acl.permission != PermissionType::Allow {
        return false;
    }
    match op {
        Describe => matches!(acl.operation, Read | Write | Delete | Alter),
        DescribeConfigs => acl.operation == AlterConfigs,
        _ => false,
    }
}

fn principal_matches(acl: &AccessControlEntry, principal: &str) -> bool {
    acl.principal == principal || acl.principal == WILDCARD_PRINCIPAL
}

fn host_matches(acl: &AccessControlEntry, host: &str) -> bool {
    acl.host == WILDCARD_HOST || acl.host == host
}

impl Authorizer<'_> {
    pub fn is_super_user(&self, principal: &KafkaPrincipal) -> bool {
        self.config.super_users.contains(&principal.to_string())
    }

    /// May `principal`, connected from `host` (an IP address), do `op` on resource `name` of
    /// type `rt`?
    pub fn authorize(
        &self,
        principal: &KafkaPrincipal,
        host: &str,
        op: AclOperation,
        rt: ResourceType,
        name: &str,
    ) -> Decision {
        if self.is_super_user(principal) {
            return Decision {
                allowed: true,
                reason: Reason::SuperUser,
            };
        }
        let who = principal.to_string();
        let mut any_acl = false;
        let mut allow = None;
        for (pt, pname, acl) in self.acls.applicable(rt, name) {
            any_acl = true;
            if !principal_matches(acl, &who) || !host_matches(acl, host) {
                continue;
            }
            if !operation_matches(acl, op) {
                continue;
            }
            let binding = || AclBinding {
                pattern: ResourcePattern::new(rt, pname, pt),
                entry: acl.clone(),
            };
            if acl.permission == PermissionType::Deny {
                return Decision {
                    allowed: false,
                    reason: Reason::Acl(binding()),
                };
            }
            if allow.is_none() && acl.permission == PermissionType::Allow {
                allow = Some(binding());
            }
        }
        match allow {
            Some(b) => Decision {
                allowed: true,
                reason: Reason::Acl(b),
            },
            None if !any_acl => Decision {
                allowed: self.config.allow_everyone_if_no_acl_found,
                reason: Reason::NoAclFound,
            },
            None => Decision {
                allowed: false,
                reason: Reason::NoMatchingAllow,
            },
        }
    }

    /// Whether `principal` may do `op` on at least one resource of type `rt` (Kafka's
    /// `Authorizer.authorizeByResourceType`, e.g. idempotent produce allowed by WRITE on some
    /// topic). Operations imply nothing here, as in Kafka.
    pub fn authorize_by_resource_type(
        &self,
        principal: &KafkaPrincipal,
        host: &str,
        op: AclOperation,
        rt: ResourceType,
    ) -> bool {
        // An arbitrary name: super users, allow.everyone with no ACL, a wildcard allow.
        if self
            .authorize(principal, host, op, rt, "fjord-arbitrary-resource-name")
            .allowed
        {
            return true;
        }
        let who = principal.to_string();
        let Some(t) = self.acls.by_type.get(&rt) else {
            return false;
        };
        let relevant = |e: &AccessControlEntry| {
            principal_matches(e, &who)
                && host_matches(e, host)
                && (e.operation == op || e.operation == AclOperation::All)
        };
        let denied = |es: &Vec<AccessControlEntry>| {
            es.iter()
                .any(|e| relevant(e) && e.permission == PermissionType::Deny)
        };
        let allowed = |es: &Vec<AccessControlEntry>| {
            es.iter()
                .any(|e| relevant(e) && e.permission == PermissionType::Allow)
        };
        if t.literal.get(WILDCARD_RESOURCE).is_some_and(denied) {
            return false;
        }
        let deny_prefixes: Vec<&str> = t
            .prefixed
            .iter()
            .filter(|(_, es)| denied(es))
            .map(|(n, _)| n.as_str())
            .collect();
        let covered = |name: &str| deny_prefixes.iter().any(|p| name.starts_with(p));
        t.literal
            .iter()
            .any(|(n, es)| allowed(es) && !denied(es) && !covered(n))
            || t.prefixed.iter().any(|(n, es)| allowed(es) && !covered(n))
    }

    /// KIP-430: the operations of `rt` that `principal` may do on resource `name`, as the bit
    /// field Metadata, DescribeCluster and DescribeGroups return.
    pub fn authorized_operations(
        &self,
        principal: &KafkaPrincipal,
        host: &str,
        rt: ResourceType,
        name: &str,
    ) -> i32 {
        AclOperation::bit_field(
            AclOperation::supported_by(rt)
                .iter()
                .copied()
                .filter(|op| self.authorize(principal, host, *op, rt, name).allowed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::AclOperation::*;
    use crate::acl::ResourceType::*;

    fn acl(
        rt: ResourceType,
        name: &str,
        pt: PatternType,
        principal: &str,
        host: &str,
        op: AclOperation,
        perm: PermissionType,
    ) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern::new(rt, name, pt),
            entry: AccessControlEntry {
                principal: principal.into(),
                host: host.into(),
                operation: op,
                permission: perm,
            },
        }
    }

    fn allow(rt: ResourceType, name: &str, principal: &str, op: AclOperation) -> AclBinding {
        acl(
            rt,
            name,
            PatternType::Literal,
            principal,
            "*",
            op,
            PermissionType::Allow,
        )
    }

    fn index(acls: &[AclBinding]) -> AclIndex {
        let mut i = AclIndex::default();
        for a in acls {
            i.add(a);
        }
        i
    }

    fn alice() -> KafkaPrincipal {
        KafkaPrincipal::user("alice")
    }

    fn check(
        idx: &AclIndex,
        cfg: &AuthorizerConfig,
        op: AclOperation,
        rt: ResourceType,
        n: &str,
    ) -> bool {
        Authorizer {
            config: cfg,
            acls: idx,
        }
        .authorize(&alice(), "10.0.0.1", op, rt, n)
        .allowed
    }

    #[test]
    fn no_acl_denies_unless_allow_everyone() {
        let idx = AclIndex::default();
        let mut cfg = AuthorizerConfig::default();
        assert!(!check(&idx, &cfg, Read, Topic, "t"));
        cfg.allow_everyone_if_no_acl_found = true;
        assert!(check(&idx, &cfg, Read, Topic, "t"));
        // An ACL on the resource for someone else: no longer "no ACL found".
        let idx = index(&[allow(Topic, "t", "User:bob", Read)]);
        assert!(!check(&idx, &cfg, Read, Topic, "t"));
        assert!(check(&idx, &cfg, Read, Topic, "u"));
    }

    #[test]
    fn super_users_may_do_anything() {
        let idx = index(&[acl(
            Topic,
            "*",
            PatternType::Literal,
            "User:*",
            "*",
            All,
            PermissionType::Deny,
        )]);
        let cfg = AuthorizerConfig {
            super_users: AuthorizerConfig::parse_super_users("User:admin; User:alice"),
            ..Default::default()
        };
        assert!(check(&idx, &cfg, Write, Topic, "t"));
        assert!(check(&idx, &cfg, ClusterAction, Cluster, "kafka-cluster"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let cfg = AuthorizerConfig::default();
        let idx = index(&[
            allow(Topic, "t", "User:alice", All),
            acl(
                Topic,
                "t",
                PatternType::Literal,
                "User:*",
                "10.0.0.1",
                Write,
                PermissionType::Deny,
            ),
        ]);
        assert!(check(&idx, &cfg, Read, Topic, "t"));
        assert!(!check(&idx, &cfg, Write, Topic, "t"));
        // The deny is for another host only.
        let a = Authorizer {
            config: &cfg,
            acls: &idx,
        };
        assert!(a.authorize(&alice(), "10.0.0.2", Write, Topic, "t").allowed);
    }

    #[test]
    fn wildcard_and_prefixed_resources_apply() {
        let cfg = AuthorizerConfig::default();
        let idx = index(&[
            allow(Topic, "*", "User:alice", Read),
            acl(
                Topic,
                "orders-",
                PatternType::Prefixed,
                "User:alice",
                "*",
                Write,
                PermissionType::Allow,
            ),
            acl(
                Topic,
                "orders-secret",
                PatternType::Prefixed,
                "User:alice",
                "*",
                Write,
                PermissionType::Deny,
            ),
        ]);
        assert!(check(&idx, &cfg, Read, Topic, "anything"));
        assert!(check(&idx, &cfg, Write, Topic, "orders-eu"));
        assert!(!check(&idx, &cfg, Write, Topic, "orders-secret-1"));
        assert!(!check(&idx, &cfg, Write, Topic, "order"));
        // A literal ACL does not apply to longer names.
        let idx = index(&[allow(Topic, "orders", "User:alice", Write)]);
        assert!(!check(&idx, &cfg, Write, Topic, "orders-eu"));
        // Resource types are separate.
        assert!(!check(&idx, &cfg, Write, Group, "orders"));
    }

    #[test]
    fn implied_operations_only_for_allow() {
        let cfg = AuthorizerConfig::default();
        for op in [Read, Write, Delete, Alter] {
            let idx = index(&[allow(Topic, "t", "User:alice", op)]);
            assert!(check(&idx, &cfg, Describe, Topic, "t"), "{op}");
        }
        let idx = index(&[allow(Topic, "t", "User:alice", Create)]);
        assert!(!check(&idx, &cfg, Describe, Topic, "t"));
        let idx = index(&[allow(Topic, "t", "User:alice", AlterConfigs)]);
        assert!(check(&idx, &cfg, DescribeConfigs, Topic, "t"));
        assert!(!check(&idx, &cfg, Describe, Topic, "t"));
        // A DENY for READ does not deny DESCRIBE.
        let idx = index(&[
            allow(Topic, "t", "User:alice", Describe),
            acl(
                Topic,
                "t",
                PatternType::Literal,
                "User:alice",
                "*",
                Read,
                PermissionType::Deny,
            ),
        ]);
        assert!(check(&idx, &cfg, Describe, Topic, "t"));
        assert!(!check(&idx, &cfg, Read, Topic, "t"));
    }

    #[test]
    fn principals_and_hosts_match_exactly_or_by_wildcard() {
        let cfg = AuthorizerConfig::default();
        let idx = index(&[acl(
            Topic,
            "t",
            PatternType::Literal,
            "User:*",
            "127.0.0.2",
            Read,
            PermissionType::Allow,
        )]);
        let a = Authorizer {
            config: &cfg,
            acls: &idx,
        };
        assert!(a.authorize(&alice(), "127.0.0.2", Read, Topic, "t").allowed);
        assert!(!a.authorize(&alice(), "127.0.0.1", Read, Topic, "t").allowed);
        let idx = index(&[allow(Topic, "t", "User:bob", Read)]);
        assert!(!check(&idx, &cfg, Read, Topic, "t"));
    }

    #[test]
    fn index_add_and_remove() {
        let a = allow(Topic, "t", "User:alice", Read);
        let mut idx = AclIndex::default();
        assert!(idx.add(&a));
        assert!(!idx.add(&a));
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.bindings().collect::<Vec<_>>(), vec![a.clone()]);
        assert!(idx.remove(&a));
        assert!(!idx.remove(&a));
        assert!(idx.is_empty());
        let cfg = AuthorizerConfig::default();
        assert!(!check(&idx, &cfg, Read, Topic, "t"));
    }

    #[test]
    fn by_resource_type_as_kafka() {
        let cfg = AuthorizerConfig::default();
        let by_type = |idx: &AclIndex| {
            Authorizer {
                config: &cfg,
                acls: idx,
            }
            .authorize_by_resource_type(&alice(), "10.0.0.1", Write, Topic)
        };
        assert!(!by_type(&AclIndex::default()));
        assert!(by_type(&index(&[allow(Topic, "t", "User:alice", Write)])));
        assert!(!by_type(&index(&[allow(Topic, "t", "User:alice", Read)])));
        let deny_prefix = acl(
            Topic,
            "t",
            PatternType::Prefixed,
            "User:alice",
            "*",
            Write,
            PermissionType::Deny,
        );
        assert!(!by_type(&index(&[
            allow(Topic, "t1", "User:alice", Write),
            deny_prefix.clone()
        ])));
        assert!(by_type(&index(&[
            allow(Topic, "u", "User:alice", Write),
            deny_prefix
        ])));
    }

    #[test]
    fn authorized_operations_bits() {
        let cfg = AuthorizerConfig::default();
        let idx = index(&[allow(Topic, "t", "User:alice", Read)]);
        let ops = Authorizer {
            config: &cfg,
            acls: &idx,
        }
        .authorized_operations(&alice(), "10.0.0.1", Topic, "t");
        assert_eq!(ops, (1 << 3) | (1 << 8));
    }

    /// With thousands of ACLs a check touches only the resource's own: 10,000 checks against
    /// 20,000 ACLs finish well within a second even in a debug build.
    #[test]
    fn checks_stay_cheap_with_many_acls() {
        let mut idx = AclIndex::default();
        for i in 0..10_000 {
            idx.add(&allow(Topic, &format!("topic-{i}"), "User:alice", Read));
            idx.add(&acl(
                Topic,
                &format!("p{i}-"),
                PatternType::Prefixed,
                "User:bob",
                "*",
                Write,
                PermissionType::Allow,
            ));
        }
        let cfg = AuthorizerConfig::default();
        let started = std::time::Instant::now();
        for i in 0..10_000 {
            assert!(check(&idx, &cfg, Read, Topic, &format!("topic-{i}")));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
