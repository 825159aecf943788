//! Kafka's ACL model: resource patterns, access control entries, bindings and the filters
//! DescribeAcls and DeleteAcls match with, with Kafka's wire codes (the `i8` values of the
//! CreateAcls/DescribeAcls/DeleteAcls messages).
//!
//! Matching follows Kafka's `ResourcePatternFilter`, `AccessControlEntryFilter` and
//! `AclBindingFilter` exactly, so `fjord acl remove` and `kafka-acls.sh --remove` delete the
//! same ACLs on Fjord as on Kafka.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A resource name that matches every name of its type (a LITERAL pattern only).
pub const WILDCARD_RESOURCE: &str = "*";
/// The principal that matches every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The host that matches every host.
pub const WILDCARD_HOST: &str = "*";
/// The name of the one CLUSTER resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            /// Every value, in wire-code order.
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant,)*];

            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            /// The value of a wire code; codes Kafka does not define are UNKNOWN.
            pub fn from_code(code: i8) -> $name {
                match code {
                    $($code => $name::$variant,)*
                    _ => $name::Unknown,
                }
            }

            /// Kafka's name (`TOPIC`, `PREFIXED`, `DESCRIBE_CONFIGS`).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// Parse Kafka's name, case-insensitively, with `-` or `_` between words.
            pub fn parse(s: &str) -> Option<$name> {
                let norm = s.trim().to_ascii_uppercase().replace('-', "_");
                // kafka-acls.sh accepts `TransactionalId`, `IdempotentWrite`: camel case too.
                let camel = camel_to_snake(s.trim());
                Self::ALL_VALUES
                    .iter()
                    .copied()
                    .find(|v| v.name() == norm || v.name() == camel)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

wire_enum!(
    /// Kafka's `ResourceType`.
    ResourceType {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
);

wire_enum!(
    /// Kafka's `PatternType`. ANY and MATCH exist only in filters.
    PatternType {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

wire_enum!(
    /// Kafka's `AclOperation`. ANY exists only in filters.
    AclOperation {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
        TwoPhaseCommit = 15, "TWO_PHASE_COMMIT";
    }
);

wire_enum!(
    /// Kafka's `AclPermissionType`. ANY exists only in filters.
    PermissionType {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

impl AclOperation {
    /// The operations that apply to a resource type (Kafka's `AclEntry.supportedOperations`),
    /// what KIP-430's authorized operations are computed over.
    pub fn supported_by(rt: ResourceType) -> &'static [AclOperation] {
        use AclOperation::*;
        match rt {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write, TwoPhaseCommit],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
            _ => &[],
        }
    }

    /// KIP-430's bit set: bit `code` set for each operation in `ops`.
    pub fn bit_field(ops: impl IntoIterator<Item = AclOperation>) -> i32 {
        ops.into_iter().fold(0, |acc, op| acc | (1 << op.code()))
    }
}

/// A resource: a type and a name (always a concrete name when authorizing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourcePattern {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern_type: PatternType,
}

impl ResourcePattern {
    pub fn new(resource_type: ResourceType, name: impl Into<String>, pattern: PatternType) -> Self {
        ResourcePattern {
            resource_type,
            name: name.into(),
            pattern_type: pattern,
        }
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ResourcePattern(resourceType={}, name={}, patternType={})",
            self.resource_type, self.name, self.pattern_type
        )
    }
}

/// Who may (or may not) do what from where.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccessControlEntry {
    /// `type:name`, `User:*` for every principal.
    pub principal: String,
    /// An IP address as the broker sees the peer (`127.0.0.1`), or `*`.
    pub host: String,
    pub operation: AclOperation,
    pub permission: PermissionType,
}

/// A pattern and an entry: one ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclBinding {
    pub pattern: ResourcePattern,
    pub entry: AccessControlEntry,
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(pattern={}, principal={}, host={}, operation={}, permissionType={})",
            self.pattern,
            self.entry.principal,
            self.entry.host,
            self.entry.operation,
            self.entry.permission
        )
    }
}

/// Why a binding cannot be stored (Kafka answers INVALID_REQUEST with this message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAcl(pub String);

impl fmt::Display for InvalidAcl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AclBinding {
    /// Kafka's controller check of a new ACL (`AclControlManager.validateNewAcl`), plus the
    /// principal's `type:name` form the authorizer needs.
    pub fn validate(&self) -> Result<(), InvalidAcl> {
        let bad = |m: String| Err(InvalidAcl(m));
        match self.pattern.resource_type {
            ResourceType::Unknown | ResourceType::Any => {
                return bad(format!(
                    "Invalid resourceType {}",
                    self.pattern.resource_type
                ))
            }
            _ => {}
        }
        if !matches!(
            self.pattern.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return bad(format!("Invalid patternType {}", self.pattern.pattern_type));
        }
        if matches!(
            self.entry.operation,
            AclOperation::Unknown | AclOperation::Any
        ) {
            return bad(format!("Invalid operation {}", self.entry.operation));
        }
        if !matches!(
            self.entry.permission,
            PermissionType::Allow | PermissionType::Deny
        ) {
            return bad(format!("Invalid permissionType {}", self.entry.permission));
        }
        if self.pattern.name.is_empty() {
            return bad("Resource name should not be empty".into());
        }
        match self.entry.principal.split_once(':') {
            Some((t, _)) if !t.is_empty() => {}
            _ => {
                return bad(format!(
                    "Could not parse principal from `{}` (no colon is present separating the principal type from the principal name)",
                    self.entry.principal
                ))
            }
        }
        if self.entry.host.is_empty() {
            return bad("Host should not be empty".into());
        }
        Ok(())
    }
}

/// Which patterns a filter selects (Kafka's `ResourcePatternFilter`). `name` `None` matches
/// every name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourcePatternFilter {
    pub resource_type: ResourceType,
    pub name: Option<String>,
    pub pattern_type: PatternType,
}

impl ResourcePatternFilter {
    /// Whether the filter has an UNKNOWN field (DescribeAcls/DeleteAcls answer INVALID_REQUEST).
    pub fn is_unknown(&self) -> bool {
        self.resource_type == ResourceType::Unknown || self.pattern_type == PatternType::Unknown
    }

    /// Kafka's `ResourcePatternFilter.matches`: with MATCH, a concrete name selects the
    /// literal pattern of that name, the literal wildcard and every prefix of it.
    pub fn matches(&self, p: &ResourcePattern) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != p.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != p.pattern_type
        {
            return false;
        }
        let Some(name) = &self.name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || self.pattern_type == p.pattern_type {
            return *name == p.name;
        }
        match p.pattern_type {
            PatternType::Literal => *name == p.name || p.name == WILDCARD_RESOURCE,
            PatternType::Prefixed => name.starts_with(&p.name),
            _ => false,
        }
    }
}

/// Which entries a filter selects (Kafka's `AccessControlEntryFilter`); `None` matches all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccessControlEntryFilter {
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: PermissionType,
}

impl AccessControlEntryFilter {
    pub fn is_unknown(&self) -> bool {
        self.operation == AclOperation::Unknown || self.permission == PermissionType::Unknown
    }

    pub fn matches(&self, e: &AccessControlEntry) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == e.principal)
            && self.host.as_ref().is_none_or(|h| *h == e.host)
            && (self.operation == AclOperation::Any || self.operation == e.operation)
            && (self.permission == PermissionType::Any || self.permission == e.permission)
    }
}

/// A pattern filter and an entry filter (Kafka's `AclBindingFilter`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AclBindingFilter {
    pub pattern: ResourcePatternFilter,
    pub entry: AccessControlEntryFilter,
}

impl AclBindingFilter {
    /// The filter that matches every ACL.
    pub fn any() -> Self {
        AclBindingFilter {
            pattern: ResourcePatternFilter {
                resource_type: ResourceType::Any,
                name: None,
                pattern_type: PatternType::Any,
            },
            entry: AccessControlEntryFilter {
                principal: None,
                host: None,
                operation: AclOperation::Any,
                permission: PermissionType::Any,
            },
        }
    }

    /// Kafka's controller check (`AclControlManager.validateFilter`).
    pub fn validate(&self) -> Result<(), InvalidAcl> {
        if self.pattern.is_unknown() {
            return Err(InvalidAcl("Unknown patternFilter.".into()));
        }
        if self.entry.is_unknown() {
            return Err(InvalidAcl("Unknown entryFilter.".into()));
        }
        Ok(())
    }

    pub fn matches(&self, b: &AclBinding) -> bool {
        self.pattern.matches(&b.pattern) && self.entry.matches(&b.entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(rt: ResourceType, name: &str, pt: PatternType, principal: &str) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern::new(rt, name, pt),
            entry: AccessControlEntry {
                principal: principal.into(),
                host: "*".into(),
                operation: AclOperation::Read,
                permission: PermissionType::Allow,
            },
        }
    }

    fn filter(rt: ResourceType, name: Option<&str>, pt: PatternType) -> AclBindingFilter {
        let mut f = AclBindingFilter::any();
        f.pattern = ResourcePatternFilter {
            resource_type: rt,
            name: name.map(str::to_string),
            pattern_type: pt,
        };
        f
    }

    /// The wire codes are Kafka's: a changed code would mis-read every client's request.
    #[test]
    fn wire_codes_are_kafkas() {
        assert_eq!(ResourceType::Topic.code(), 2);
        assert_eq!(ResourceType::Group.code(), 3);
        assert_eq!(ResourceType::Cluster.code(), 4);
        assert_eq!(ResourceType::TransactionalId.code(), 5);
        assert_eq!(ResourceType::DelegationToken.code(), 6);
        assert_eq!(ResourceType::User.code(), 7);
        assert_eq!(PatternType::Match.code(), 2);
        assert_eq!(PatternType::Literal.code(), 3);
        assert_eq!(PatternType::Prefixed.code(), 4);
        assert_eq!(AclOperation::All.code(), 2);
        assert_eq!(AclOperation::Describe.code(), 8);
        assert_eq!(AclOperation::ClusterAction.code(), 9);
        assert_eq!(AclOperation::IdempotentWrite.code(), 12);
        assert_eq!(AclOperation::TwoPhaseCommit.code(), 15);
        assert_eq!(PermissionType::Deny.code(), 2);
        assert_eq!(PermissionType::Allow.code(), 3);
        for op in AclOperation::ALL_VALUES {
            assert_eq!(AclOperation::from_code(op.code()), *op);
        }
        assert_eq!(AclOperation::from_code(99), AclOperation::Unknown);
        assert_eq!(ResourceType::from_code(-1), ResourceType::Unknown);
    }

    #[test]
    fn names_parse_as_kafka_tools_write_them() {
        assert_eq!(
            AclOperation::parse("IdempotentWrite"),
            Some(AclOperation::IdempotentWrite)
        );
        assert_eq!(
            AclOperation::parse("describe-configs"),
            Some(AclOperation::DescribeConfigs)
        );
        assert_eq!(AclOperation::parse("read"), Some(AclOperation::Read));
        assert_eq!(
            ResourceType::parse("TransactionalId"),
            Some(ResourceType::TransactionalId)
        );
        assert_eq!(PatternType::parse("prefixed"), Some(PatternType::Prefixed));
        assert_eq!(AclOperation::parse("fly"), None);
    }

    #[test]
    fn validation_refuses_what_kafka_refuses() {
        let ok = binding(ResourceType::Topic, "t", PatternType::Literal, "User:a");
        assert!(ok.validate().is_ok());
        let mut b = ok.clone();
        b.pattern.resource_type = ResourceType::Any;
        assert!(b.validate().is_err());
        let mut b = ok.clone();
        b.pattern.pattern_type = PatternType::Match;
        assert!(b.validate().is_err());
        let mut b = ok.clone();
        b.entry.operation = AclOperation::Any;
        assert!(b.validate().is_err());
        let mut b = ok.clone();
        b.entry.permission = PermissionType::Any;
        assert!(b.validate().is_err());
        let mut b = ok.clone();
        b.pattern.name.clear();
        assert!(b.validate().is_err());
        let mut b = ok.clone();
        b.entry.principal = "alice".into();
        assert!(b.validate().is_err());
    }

    #[test]
    fn pattern_filters_match_as_kafka() {
        let lit = binding(ResourceType::Topic, "foo", PatternType::Literal, "User:a");
        let wild = binding(ResourceType::Topic, "*", PatternType::Literal, "User:a");
        let pre = binding(ResourceType::Topic, "fo", PatternType::Prefixed, "User:a");
        let other = binding(ResourceType::Group, "foo", PatternType::Literal, "User:a");

        // ANY with a name: exact names of any pattern type.
        let f = filter(ResourceType::Any, Some("foo"), PatternType::Any);
        assert!(f.matches(&lit) && !f.matches(&wild) && !f.matches(&pre) && f.matches(&other));
        // MATCH: everything that would apply to topic foo.
        let f = filter(ResourceType::Topic, Some("foo"), PatternType::Match);
        assert!(f.matches(&lit) && f.matches(&wild) && f.matches(&pre) && !f.matches(&other));
        let f = filter(ResourceType::Topic, Some("fx"), PatternType::Match);
        assert!(!f.matches(&lit) && f.matches(&wild) && !f.matches(&pre));
        // A concrete pattern type: that type and exact name only.
        let f = filter(ResourceType::Topic, Some("fo"), PatternType::Prefixed);
        assert!(f.matches(&pre) && !f.matches(&lit));
        let f = filter(ResourceType::Topic, Some("foo"), PatternType::Prefixed);
        assert!(!f.matches(&pre));
        // No name: the types decide.
        let f = filter(ResourceType::Topic, None, PatternType::Literal);
        assert!(f.matches(&lit) && f.matches(&wild) && !f.matches(&pre) && !f.matches(&other));
        let f = filter(ResourceType::Topic, None, PatternType::Match);
        assert!(f.matches(&lit) && f.matches(&pre));
    }

    #[test]
    fn entry_filters_match_fields_or_any() {
        let b = binding(ResourceType::Topic, "foo", PatternType::Literal, "User:a");
        let mut f = AclBindingFilter::any();
        assert!(f.matches(&b));
        f.entry.principal = Some("User:b".into());
        assert!(!f.matches(&b));
        f.entry.principal = Some("User:a".into());
        f.entry.operation = AclOperation::Write;
        assert!(!f.matches(&b));
        f.entry.operation = AclOperation::Read;
        f.entry.permission = PermissionType::Deny;
        assert!(!f.matches(&b));
        f.entry.permission = PermissionType::Allow;
        f.entry.host = Some("10.0.0.1".into());
        assert!(!f.matches(&b));
        f.entry.host = Some("*".into());
        assert!(f.matches(&b));
        let mut bad = AclBindingFilter::any();
        bad.entry.operation = AclOperation::Unknown;
        assert!(bad.validate().is_err());
        let mut bad = AclBindingFilter::any();
        bad.pattern.pattern_type = PatternType::Unknown;
        assert!(bad.validate().is_err());
        assert!(AclBindingFilter::any().validate().is_ok());
    }

    #[test]
    fn kip_430_bit_field() {
        assert_eq!(
            AclOperation::bit_field([AclOperation::Read, AclOperation::Describe]),
            (1 << 3) | (1 << 8)
        );
    }
}
