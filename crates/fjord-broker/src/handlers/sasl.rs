//! SaslHandshake (v0-1) and SaslAuthenticate (v0-2) that reach the handlers — after the
//! connection's authentication without `connections.max.reauth.ms`, or on a PLAINTEXT listener:
//! ILLEGAL_SASL_STATE, as Kafka's `KafkaApis` answers them. The exchange itself runs before the
//! request pipeline and re-authentication (KIP-368) inside it, both in `crate::sasl`.

use fjord_protocol::error::ErrorCode;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

use super::sb;

pub fn handshake(_req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    SaslHandshakeResponse::default().with_error_code(ErrorCode::IllegalSaslState.code())
}

pub fn authenticate(_req: SaslAuthenticateRequest) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(ErrorCode::IllegalSaslState.code())
        .with_error_message(Some(sb(
            "SaslAuthenticate request received after successful authentication or on a listener without SASL",
        )))
}
