//! Authentication and authorization without I/O (issue 16).
//!
//! - [`principal`]: who a connection is (`User:alice`), as Kafka's `KafkaPrincipal`.
//! - [`sasl`]: SASL PLAIN, SCRAM-SHA-256/512 (server and client ends), OAUTHBEARER with JWT
//!   validation, and Kafka's JAAS text.
//! - [`acl`]: Kafka's ACL model (resource patterns, entries, bindings, filters) with wire codes.
//! - [`ssl_principal`]: `ssl.principal.mapping.rules`, a certificate's DN to a user name.
//! - [`authorizer`]: Kafka's `StandardAuthorizer` decisions over an indexed ACL set.
//!
//! The broker (`fjord-broker`) does the I/O: it runs a connection's handshake, keeps its
//! principal, and asks the pure functions here for decisions. What is stored (ACLs, SCRAM
//! credentials) lives as metadata records in `fjord-metadata`.

pub mod acl;
pub mod authorizer;
pub mod principal;
pub mod sasl;
pub mod ssl_principal;

pub use principal::KafkaPrincipal;
