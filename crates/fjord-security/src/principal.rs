//! A principal: the identity a connection authenticated as, `type:name` as Kafka writes it
//! (`User:alice`). A connection that did not authenticate (a PLAINTEXT listener) is
//! `User:ANONYMOUS`, as in Kafka.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Kafka's principal type for users.
pub const USER_TYPE: &str = "User";

/// The principal of an unauthenticated connection.
pub const ANONYMOUS: &str = "ANONYMOUS";

/// `type:name`, e.g. `User:alice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KafkaPrincipal {
    pub principal_type: String,
    pub name: String,
}

impl KafkaPrincipal {
    pub fn user(name: impl Into<String>) -> Self {
        KafkaPrincipal {
            principal_type: USER_TYPE.to_string(),
            name: name.into(),
        }
    }

    /// `User:ANONYMOUS`.
    pub fn anonymous() -> Self {
        Self::user(ANONYMOUS)
    }

    pub fn is_anonymous(&self) -> bool {
        self.principal_type == USER_TYPE && self.name == ANONYMOUS
    }

    /// Parse `type:name` (the name may contain ':'); `None` without a ':' or with an empty
    /// type.
    pub fn parse(s: &str) -> Option<Self> {
        let (t, n) = s.split_once(':')?;
        (!t.is_empty()).then(|| KafkaPrincipal {
            principal_type: t.to_string(),
            name: n.to_string(),
        })
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let p = KafkaPrincipal::parse("User:CN=a:b").unwrap();
        assert_eq!(p.principal_type, "User");
        assert_eq!(p.name, "CN=a:b");
        assert_eq!(p.to_string(), "User:CN=a:b");
        assert!(KafkaPrincipal::parse("alice").is_none());
        assert!(KafkaPrincipal::parse(":alice").is_none());
        assert!(KafkaPrincipal::anonymous().is_anonymous());
        assert!(!KafkaPrincipal::user("alice").is_anonymous());
    }
}
