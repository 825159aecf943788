//! Shared argument types and parsers.

use std::time::Duration;

use anyhow::Context;
use fjord_client::{Client, ClientConfig, Compression, ConnectionConfig};

/// How client commands reach the cluster.
#[derive(Debug, Clone)]
pub struct Connect {
    pub bootstrap: String,
    pub request_timeout: Duration,
}

impl Connect {
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            connection: ConnectionConfig {
                client_id: "fjord-cli".to_string(),
                request_timeout: self.request_timeout,
                ..ConnectionConfig::default()
            },
        }
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        Client::connect_with(&self.bootstrap, self.config())
            .await
            .with_context(|| format!("bootstrap server {}", self.bootstrap))
    }
}

/// Parse `key=value` (the value may contain `=`; the key may not be empty).
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Parse `--acks`: `0`, `1`, `-1` or `all`.
pub fn acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "-1" | "all" => Ok(-1),
        _ => Err(format!("acks must be 0, 1, -1 or all, got {s:?}")),
    }
}

/// Parse `--compression`.
pub fn compression(s: &str) -> Result<Compression, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" => Ok(Compression::None),
        "gzip" => Ok(Compression::Gzip),
        "snappy" => Ok(Compression::Snappy),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        _ => Err(format!(
            "compression must be none, gzip, snappy, lz4 or zstd, got {s:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_splits_at_first_equals() {
        assert_eq!(
            key_value("retention.ms=1000"),
            Ok(("retention.ms".into(), "1000".into()))
        );
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(key_value("a="), Ok(("a".into(), "".into())));
        assert!(key_value("novalue").is_err());
        assert!(key_value("=x").is_err());
    }

    #[test]
    fn acks_and_compression() {
        assert_eq!(acks("all"), Ok(-1));
        assert_eq!(acks("-1"), Ok(-1));
        assert_eq!(acks("0"), Ok(0));
        assert!(acks("2").is_err());
        assert_eq!(compression("ZSTD"), Ok(Compression::Zstd));
        assert!(compression("brotli").is_err());
    }
}
