//! SASL on a client connection (Kafka's `SaslClientAuthenticator`): after ApiVersions,
//! SaslHandshake v1 names the mechanism and SaslAuthenticate requests carry its tokens —
//! PLAIN (RFC 4616), SCRAM-SHA-256/512 (`fjord_security::sasl::scram`) or OAUTHBEARER
//! (RFC 7628) with a token the caller already holds.

use bytes::Bytes;
use fjord_security::sasl::oauthbearer::ClientInitialResponse;
use fjord_security::sasl::plain::PlainMessage;
use fjord_security::sasl::scram::{random_nonce, ScramClient, ScramMechanism};
use fjord_security::sasl::{OAUTHBEARER, PLAIN};
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// What a client authenticates with. `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    pub mechanism: String,
    /// The user name; with OAUTHBEARER only a label for errors (the token names the principal).
    pub username: String,
    /// The password; with OAUTHBEARER the bearer token (a JWT).
    pub password: String,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl SaslCredentials {
    /// Check the mechanism is one this client speaks.
    pub fn validate(&self) -> Result<()> {
        if self.mechanism == PLAIN
            || self.mechanism == OAUTHBEARER
            || ScramMechanism::from_name(&self.mechanism).is_some()
        {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "SASL mechanism {} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER are)",
                self.mechanism
            )))
        }
    }
}

/// Authenticate `conn` with `creds`; an error leaves the connection unusable.
pub(crate) async fn authenticate(conn: &Connection, creds: &SaslCredentials) -> Result<()> {
    creds.validate()?;
    let addr = conn.addr();
    let handshake = conn
        .send_at(
            &SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_string(creds.mechanism.clone())),
            1,
        )
        .await?;
    if handshake.error_code != 0 {
        let enabled: Vec<String> = handshake.mechanisms.iter().map(|m| m.to_string()).collect();
        return Err(Error::kafka(
            handshake.error_code,
            format!("SASL handshake with {addr}"),
            Some(format!(
                "mechanism {} is not enabled; the broker offers {}",
                creds.mechanism,
                enabled.join(",")
            )),
        ));
    }
    if creds.mechanism == OAUTHBEARER {
        let first = ClientInitialResponse::encode(&creds.password, &Default::default());
        let challenge = step(conn, creds, first).await?;
        if !challenge.is_empty() {
            // RFC 7628: an error challenge (`{"status":"invalid_token"}`); answering %x01 lets
            // the server end the exchange with SASL_AUTHENTICATION_FAILED, reported by `step`.
            step(conn, creds, vec![0x01]).await?;
            return Err(Error::Protocol(format!(
                "OAUTHBEARER with {addr}: the token was refused: {}",
                String::from_utf8_lossy(&challenge)
            )));
        }
        return Ok(());
    }
    match ScramMechanism::from_name(&creds.mechanism) {
        None => {
            step(
                conn,
                creds,
                PlainMessage::encode(&creds.username, &creds.password),
            )
            .await?;
        }
        Some(mech) => {
            let mut client =
                ScramClient::new(mech, &creds.username, &creds.password, &random_nonce());
            let server_first = step(conn, creds, client.client_first()).await?;
            let fin = client
                .client_final(&server_first)
                .map_err(|e| Error::Protocol(format!("SCRAM with {}: {e}", conn.addr())))?;
            let server_final = step(conn, creds, fin).await?;
            client
                .server_final(&server_final)
                .map_err(|e| Error::Protocol(format!("SCRAM with {}: {e}", conn.addr())))?;
        }
    }
    Ok(())
}

/// One SaslAuthenticate round trip: the server's token, or its error.
async fn step(conn: &Connection, creds: &SaslCredentials, token: Vec<u8>) -> Result<Bytes> {
    let r = conn
        .send(&SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)))
        .await?;
    if r.error_code != 0 {
        return Err(Error::kafka(
            r.error_code,
            format!(
                "SASL authentication with {} as {}",
                conn.addr(),
                creds.username
            ),
            r.error_message.map(|m| m.to_string()),
        ));
    }
    Ok(r.auth_bytes)
}
