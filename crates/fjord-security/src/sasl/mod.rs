//! SASL mechanisms, without I/O: the broker's `sasl` module runs the exchange on a connection
//! and asks these for each step.
//!
//! - [`plain`]: PLAIN (RFC 4616) against the JAAS `user_<name>` list.
//! - [`scram`]: SCRAM-SHA-256/512 (RFC 5802/7677), both ends, and the stored credential.
//! - [`oauthbearer`]: OAUTHBEARER (RFC 7628, KIP-255) and JWT validation against a JWKS
//!   (KIP-768), or Kafka's unsecured validator.
//! - [`jaas`]: Kafka's `sasl.jaas.config` text.

pub mod jaas;
pub mod oauthbearer;
pub mod plain;
pub mod scram;

/// The mechanisms Fjord serves, by their SASL names.
pub const PLAIN: &str = "PLAIN";
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA_512: &str = "SCRAM-SHA-512";
pub const OAUTHBEARER: &str = "OAUTHBEARER";

/// Equal without an early exit on the first difference (passwords, keys, signatures).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether Fjord implements the mechanism called `name`.
pub fn is_supported_mechanism(name: &str) -> bool {
    [PLAIN, SCRAM_SHA_256, SCRAM_SHA_512, OAUTHBEARER].contains(&name)
}
