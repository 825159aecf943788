//! Shared argument types and parsers.

use std::time::Duration;

use anyhow::Context;
use fjord_client::{client_id_with_az, Client, ClientConfig, Compression, ConnectionConfig};

/// How client commands reach the cluster.
#[derive(Debug, Clone)]
pub struct Connect {
    pub bootstrap: String,
    pub request_timeout: Duration,
}

/// The client id of every CLI command.
const CLIENT_ID: &str = "fjord-cli";

impl Connect {
    pub fn config(&self) -> ClientConfig {
        self.config_in_rack(None)
    }

    /// The client settings of a client in `rack` (an availability zone): its client id carries
    /// `fjord_az=<rack>` (`fjord-cli,fjord_az=b`), which brokers read to account traffic per
    /// zone.
    pub fn config_in_rack(&self, rack: Option<&str>) -> ClientConfig {
        ClientConfig {
            connection: ConnectionConfig {
                client_id: match rack {
                    Some(rack) => client_id_with_az(CLIENT_ID, rack),
                    None => CLIENT_ID.to_string(),
                },
                request_timeout: self.request_timeout,
                ..ConnectionConfig::default()
            },
        }
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_with(self.config()).await
    }

    pub async fn client_with(&self, config: ClientConfig) -> anyhow::Result<Client> {
        Client::connect_with(&self.bootstrap, config)
            .await
            .with_context(|| format!("bootstrap server {}", self.bootstrap))
    }
}

/// Parse `--rack`: a broker.rack value, which also goes into the client id as
/// `fjord_az=<rack>`, so it may not hold a comma, `=` or whitespace.
pub fn rack(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(|c| c == ',' || c == '=' || c.is_whitespace()) {
        return Err(format!(
            "a rack is a non-empty name without commas, '=' or spaces, got {s:?}"
        ));
    }
    Ok(s.to_string())
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
    fn rack_goes_into_the_client_id() {
        assert_eq!(rack("eu-west-1a"), Ok("eu-west-1a".into()));
        for bad in ["", "a,b", "a=b", "a b"] {
            assert!(rack(bad).is_err(), "{bad:?}");
        }
        let connect = Connect {
            bootstrap: "127.0.0.1:9092".into(),
            request_timeout: Duration::from_secs(1),
        };
        assert_eq!(connect.config().connection.client_id, "fjord-cli");
        assert_eq!(
            connect.config_in_rack(Some("b")).connection.client_id,
            "fjord-cli,fjord_az=b"
        );
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
