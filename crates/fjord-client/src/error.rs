//! The client's error type: Kafka error codes (by name), I/O, timeouts and protocol violations
//! are kept apart so callers can tell "the broker said no" from "the network broke".

use std::time::Duration;

use kafka_protocol::ResponseError;

/// Result alias for the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker answered with a non-zero error code.
    #[error("{context}: {name} ({code}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        code: i16,
        /// Kafka's name for the code, e.g. `TOPIC_ALREADY_EXISTS`.
        name: String,
        /// What the request was about, e.g. `topic "orders"`.
        context: String,
        /// The broker's error message, when it sent one.
        message: Option<String>,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    /// The TLS handshake failed (an untrusted or misnamed certificate, no common protocol,
    /// a plaintext listener).
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    /// Reading or writing the socket failed.
    #[error("I/O error talking to {addr}: {error}")]
    Io { addr: String, error: std::io::Error },
    /// No response within the request timeout.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// The connection was closed (by the broker or after an earlier error).
    #[error("connection to {addr} closed: {reason}")]
    Disconnected { addr: String, reason: String },
    /// The broker does not implement a version of this API that we can speak.
    #[error("broker {addr} does not support {api}")]
    UnsupportedApi { addr: String, api: String },
    /// Bytes on the wire did not decode, or a response did not match its request.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The caller asked for something that cannot be done (unknown partition, bad argument).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Build a [`Error::Kafka`] from a wire error code.
    pub fn kafka(code: i16, context: impl Into<String>, message: Option<String>) -> Error {
        Error::Kafka {
            code,
            name: error_name(code),
            context: context.into(),
            message: message.filter(|m| !m.is_empty()),
        }
    }

    /// The Kafka error code, if this is a broker error.
    pub fn code(&self) -> Option<i16> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether Kafka defines this error as retriable (a broker error), or it is a transient
    /// network condition.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { code, .. } => {
                ResponseError::try_from_code(*code).is_some_and(|e| e.is_retriable())
            }
            Error::Io { .. } | Error::Timeout { .. } | Error::Disconnected { .. } => true,
            _ => false,
        }
    }
}

/// Kafka's name for an error code (`TOPIC_ALREADY_EXISTS`), `NONE` for 0, `UNKNOWN` otherwise.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(ResponseError::Unknown(_)) => "UNKNOWN".to_string(),
        // The crate names variants in CamelCase after Kafka's SCREAMING_SNAKE names.
        Some(e) => screaming_snake(&format!("{e:?}")),
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `Ok(())` for code 0, otherwise a [`Error::Kafka`] with `context`.
pub fn check(code: i16, context: impl FnOnce() -> String, message: Option<String>) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::kafka(code, context(), message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_kafka() {
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(9999), "UNKNOWN");
    }

    #[test]
    fn display_reads_like_the_cli_wants() {
        let e = Error::kafka(36, "topic \"x\"", None);
        assert_eq!(e.to_string(), "topic \"x\": TOPIC_ALREADY_EXISTS (36)");
        let e = Error::kafka(37, "topic \"x\"", Some("must be > 0".into()));
        assert_eq!(
            e.to_string(),
            "topic \"x\": INVALID_PARTITIONS (37): must be > 0"
        );
    }
}
