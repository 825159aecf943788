//! Authentication and authorization without I/O (issue 16).
//!
//! - [`principal`]: who a connection is (`User:alice`), as Kafka's `KafkaPrincipal`.
//!
//! The broker (`fjord-broker`) does the I/O: it runs a connection's handshake, keeps its
//! principal, and asks the pure functions here for decisions. What is stored (ACLs, SCRAM
//! credentials) lives as metadata records in `fjord-metadata`.

pub mod principal;

pub use principal::KafkaPrincipal;
