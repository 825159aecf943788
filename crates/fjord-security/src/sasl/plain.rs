//! SASL PLAIN (RFC 4616) as Kafka's `PlainSaslServer`: `[authzid] NUL authcid NUL passwd`,
//! checked against the users of the listener's JAAS configuration.

use std::collections::BTreeMap;

use super::ct_eq;

/// The longest PLAIN message accepted. RFC 4616 allows 255 bytes per field; Kafka only bounds
/// the token by `sasl.server.max.receive.size`, so long passwords are allowed up to this.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// A parsed PLAIN message. The password stays here only as long as the exchange.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainMessage {
    pub authzid: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PlainMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainMessage")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a PLAIN exchange failed; the text is what the client is told (Kafka's wording).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlainError {
    Malformed(&'static str),
    InvalidCredentials,
    AuthzidMismatch,
}

impl std::fmt::Display for PlainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlainError::Malformed(why) => write!(f, "Invalid SASL/PLAIN response: {why}"),
            PlainError::InvalidCredentials => {
                write!(f, "Authentication failed: Invalid username or password")
            }
            PlainError::AuthzidMismatch => write!(
                f,
                "Authentication failed: Client requested an authorization id that is different from username"
            ),
        }
    }
}

impl std::error::Error for PlainError {}

impl PlainMessage {
    pub fn parse(msg: &[u8]) -> Result<PlainMessage, PlainError> {
        if msg.len() > MAX_MESSAGE_BYTES {
            return Err(PlainError::Malformed("message too long"));
        }
        let s = std::str::from_utf8(msg).map_err(|_| PlainError::Malformed("not UTF-8"))?;
        let mut parts = s.split('\0');
        let (Some(authzid), Some(username), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PlainError::Malformed(
                "expected 3 tokens separated by NUL characters",
            ));
        };
        if username.is_empty() {
            return Err(PlainError::Malformed("username not specified"));
        }
        if password.is_empty() {
            return Err(PlainError::Malformed("password not specified"));
        }
        Ok(PlainMessage {
            authzid: authzid.to_string(),
            username: username.to_string(),
            password: password.to_string(),
        })
    }

    /// The message a client sends (no authorization id).
    pub fn encode(username: &str, password: &str) -> Vec<u8> {
        format!("\0{username}\0{password}").into_bytes()
    }
}

/// Check a PLAIN message against `users` (name → password); the authenticated user name.
pub fn authenticate(msg: &[u8], users: &BTreeMap<String, String>) -> Result<String, PlainError> {
    let m = PlainMessage::parse(msg)?;
    let ok = users
        .get(&m.username)
        .is_some_and(|expected| ct_eq(expected.as_bytes(), m.password.as_bytes()));
    if !ok {
        return Err(PlainError::InvalidCredentials);
    }
    if !m.authzid.is_empty() && m.authzid != m.username {
        return Err(PlainError::AuthzidMismatch);
    }
    Ok(m.username)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> BTreeMap<String, String> {
        [("alice".to_string(), "alice-secret".to_string())].into()
    }

    #[test]
    fn accepts_and_refuses() {
        assert_eq!(
            authenticate(b"\0alice\0alice-secret", &users()).unwrap(),
            "alice"
        );
        assert_eq!(
            authenticate(b"alice\0alice\0alice-secret", &users()).unwrap(),
            "alice"
        );
        assert_eq!(
            authenticate(b"\0alice\0wrong", &users()),
            Err(PlainError::InvalidCredentials)
        );
        assert_eq!(
            authenticate(b"\0bob\0alice-secret", &users()),
            Err(PlainError::InvalidCredentials)
        );
        assert_eq!(
            authenticate(b"bob\0alice\0alice-secret", &users()),
            Err(PlainError::AuthzidMismatch)
        );
        assert_eq!(
            PlainMessage::parse(&PlainMessage::encode("u", "p")).unwrap(),
            PlainMessage {
                authzid: String::new(),
                username: "u".into(),
                password: "p".into()
            }
        );
    }

    #[test]
    fn malformed() {
        for m in [
            &b""[..],
            b"\0",
            b"\0\0",
            b"\0alice\0",
            b"\0\0pw",
            b"a\0b\0c\0d",
            b"\0\xff\0pw",
        ] {
            assert!(matches!(
                authenticate(m, &users()),
                Err(PlainError::Malformed(_))
            ));
        }
        let long = vec![b'a'; MAX_MESSAGE_BYTES + 1];
        assert!(PlainMessage::parse(&long).is_err());
        assert!(!format!("{:?}", PlainMessage::parse(b"\0u\0pw").unwrap()).contains("pw"));
    }
}
