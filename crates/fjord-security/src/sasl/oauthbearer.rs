//! SASL OAUTHBEARER (RFC 7628, KIP-255) on the server side, and the token validation of
//! KIP-768, without I/O.
//!
//! The client's only message is `n,[a=<authzid>],\x01auth=Bearer <token>\x01[key=value\x01]*\x01`
//! ([`ClientInitialResponse`]). The server validates the token and either completes with an
//! empty answer, or — as Kafka's `OAuthBearerSaslServer` — sends the JSON error
//! `{"status":"invalid_token"}` as a challenge; the client answers `\x01` and the exchange
//! fails with that JSON as the message ([`OAuthBearerServer`]).
//!
//! Two validators, as Kafka's broker:
//! - [`validate_jwt`]: a signed JWT checked against a JSON Web Key Set ([`Jwks`], the keys of
//!   `sasl.oauthbearer.jwks.endpoint.url`): asymmetric algorithms only (never `none` nor
//!   HMAC), the key chosen by `kid`, then `exp` (required), `nbf`, `iat`, the expected
//!   audience and issuer, the principal claim and the scope claim.
//! - [`validate_unsecured`]: Kafka's default when no JWKS is configured
//!   (`OAuthBearerUnsecuredValidatorCallbackHandler`): `alg: none` tokens with an empty
//!   signature, their claims believed. For development only.
//!
//! Times are passed in (`now_ms`, milliseconds since the epoch) so every check is testable.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// The longest client message accepted: a JWT with many claims is a few KiB; the broker's
/// `sasl.server.max.receive.size` bounds the frame before this.
pub const MAX_INITIAL_RESPONSE_BYTES: usize = 64 * 1024;

/// The separator of RFC 7628 (`%x01`).
const SEP: u8 = 0x01;

/// What the client is told when its first message is not OAUTHBEARER (Kafka's
/// `SaslServerAuthenticator` wording for a `SaslException`).
pub const MALFORMED_MESSAGE: &str =
    "Authentication failed during authentication due to invalid credentials with SASL mechanism OAUTHBEARER";

/// A parsed client initial response.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientInitialResponse {
    /// The GS2 authorization id (`a=`), unescaped; empty when absent.
    pub authzid: String,
    /// The bearer token (a JWT).
    pub token: String,
    /// SASL extensions (KIP-342): every `key=value` other than `auth`.
    pub extensions: BTreeMap<String, String>,
}

impl std::fmt::Debug for ClientInitialResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInitialResponse")
            .field("authzid", &self.authzid)
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

impl ClientInitialResponse {
    /// Parse as Kafka's `OAuthBearerClientInitialResponse`:
    /// `n,(a=SASLNAME)?,\x01(KEY=VALUE\x01)*\x01` with KEY `[A-Za-z]+`, VALUE
    /// `[\x21-\x7E \t\r\n]+`, and `auth` = `Bearer <token>` (scheme case-insensitive).
    pub fn parse(msg: &[u8]) -> Result<ClientInitialResponse, &'static str> {
        if msg.len() > MAX_INITIAL_RESPONSE_BYTES {
            return Err("client first message too long");
        }
        let rest = msg
            .strip_prefix(b"n,")
            .ok_or("expected the GS2 header n,")?;
        let comma = rest
            .iter()
            .position(|&b| b == b',')
            .ok_or("GS2 header not terminated")?;
        let (authz, rest) = (&rest[..comma], &rest[comma + 1..]);
        let authzid = if authz.is_empty() {
            String::new()
        } else {
            let name = authz.strip_prefix(b"a=").ok_or("invalid GS2 header")?;
            unescape_saslname(name)?
        };
        let rest = rest
            .strip_prefix(&[SEP])
            .ok_or("expected %x01 after GS2 header")?;
        let pairs = rest
            .strip_suffix(&[SEP])
            .ok_or("expected %x01 at the end of the message")?;
        // `pairs` is `(KEY=VALUE\x01)*`: empty, or ending in the separator.
        let mut extensions = BTreeMap::new();
        let mut auth = None;
        if !pairs.is_empty() {
            let body = pairs
                .strip_suffix(&[SEP])
                .ok_or("key/value pair not terminated by %x01")?;
            for kv in body.split(|&b| b == SEP) {
                let eq = kv
                    .iter()
                    .position(|&b| b == b'=')
                    .ok_or("expected key=value")?;
                let (k, v) = (&kv[..eq], &kv[eq + 1..]);
                if k.is_empty() || !k.iter().all(u8::is_ascii_alphabetic) {
                    return Err("invalid key");
                }
                if v.is_empty()
                    || !v
                        .iter()
                        .all(|&b| (0x21..=0x7e).contains(&b) || b" \t\r\n".contains(&b))
                {
                    return Err("invalid value");
                }
                // Both are ASCII, checked above.
                let k = String::from_utf8_lossy(k).into_owned();
                let v = String::from_utf8_lossy(v).into_owned();
                if k == "auth" {
                    auth = Some(v);
                } else {
                    extensions.insert(k, v);
                }
            }
        }
        let auth = auth.ok_or("'auth' not specified")?;
        let (scheme, token) = auth.split_once(' ').ok_or("invalid 'auth' format")?;
        let token = token.trim_start_matches(' ');
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("invalid scheme");
        }
        let body = token.trim_end_matches('=');
        if body.is_empty()
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_~+/.".contains(&b))
        {
            return Err("invalid 'auth' format");
        }
        Ok(ClientInitialResponse {
            authzid,
            token: token.to_string(),
            extensions,
        })
    }

    /// The message a client sends.
    pub fn encode(token: &str, extensions: &BTreeMap<String, String>) -> Vec<u8> {
        let mut out = b"n,,\x01auth=Bearer ".to_vec();
        out.extend_from_slice(token.as_bytes());
        out.push(SEP);
        for (k, v) in extensions {
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
            out.push(SEP);
        }
        out.push(SEP);
        out
    }
}

/// RFC 5801 `saslname`: ASCII without `,` and `=` except as `=2C` / `=3D`.
fn unescape_saslname(b: &[u8]) -> Result<String, &'static str> {
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'=' => {
                match b.get(i + 1..i + 3) {
                    Some(b"2C") => out.push(','),
                    Some(b"3D") => out.push('='),
                    _ => return Err("invalid authorization id"),
                }
                i += 3;
            }
            c @ 0x01..=0x7f if c != b',' => {
                out.push(c as char);
                i += 1;
            }
            _ => return Err("invalid authorization id"),
        }
    }
    if out.is_empty() {
        return Err("invalid authorization id");
    }
    Ok(out)
}

/// How tokens are checked, besides the signature: Kafka's `sasl.oauthbearer.*` keys (or the
/// unsecured validator's JAAS options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// `sasl.oauthbearer.expected.audience`: the token's `aud` must contain one (none: any).
    pub expected_audience: Vec<String>,
    /// `sasl.oauthbearer.expected.issuer`: the token's `iss` must equal it.
    pub expected_issuer: Option<String>,
    /// `sasl.oauthbearer.sub.claim.name`: the claim holding the principal's name.
    pub sub_claim_name: String,
    /// `sasl.oauthbearer.scope.claim.name`: the claim holding the scopes.
    pub scope_claim_name: String,
    /// `sasl.oauthbearer.clock.skew.seconds` in milliseconds: allowed for `exp`, `nbf`, `iat`.
    pub clock_skew_ms: i64,
    /// Scopes the token must all carry (the unsecured validator's
    /// `unsecuredValidatorRequiredScope`; empty for none).
    pub required_scope: Vec<String>,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            expected_audience: Vec::new(),
            expected_issuer: None,
            sub_claim_name: "sub".into(),
            scope_claim_name: "scope".into(),
            clock_skew_ms: 30_000,
            required_scope: Vec::new(),
        }
    }
}

/// A validated token: what the session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidToken {
    /// The principal's name (the `sub` claim, or `sasl.oauthbearer.sub.claim.name`).
    pub principal: String,
    pub scope: BTreeSet<String>,
    /// `exp` in milliseconds since the epoch: the session ends then (KIP-368).
    pub expires_ms: i64,
    pub issued_at_ms: Option<i64>,
}

/// Why a token was refused: logged by the broker, never sent to the client (which gets
/// `{"status":"invalid_token"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

fn err<T>(why: impl Into<String>) -> Result<T, TokenError> {
    Err(TokenError(why.into()))
}

/// The algorithms accepted with a JWKS: asymmetric ones only (never `none`, never HMAC — a
/// public key set must not become a shared secret).
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Which algorithms a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    EcP256,
    EcP384,
    Ed,
}

impl KeyFamily {
    fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyFamily::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyFamily::EcP256 => alg == ES256,
            KeyFamily::EcP384 => alg == ES384,
            KeyFamily::Ed => alg == EdDSA,
        }
    }
}

struct VerificationKey {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one: only that algorithm is accepted with the key.
    alg: Option<String>,
    family: KeyFamily,
    key: DecodingKey,
}

/// A JSON Web Key Set (RFC 7517) as the broker holds it: the signature keys it could use.
pub struct Jwks {
    keys: Vec<VerificationKey>,
    /// Keys left out (symmetric, encryption, unsupported curve or malformed), for the log.
    pub skipped: usize,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field(
                "kids",
                &self
                    .keys
                    .iter()
                    .map(|k| k.kid.as_deref())
                    .collect::<Vec<_>>(),
            )
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl Jwks {
    /// Parse a JWKS document (`{"keys":[...]}`); an error if it holds no usable key.
    pub fn parse(json: &str) -> Result<Jwks, String> {
        let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let Some(list) = doc.get("keys").and_then(Value::as_array) else {
            return Err("expected a JSON object with a \"keys\" array".into());
        };
        let mut keys = Vec::new();
        let mut skipped = 0;
        for k in list {
            match serde_json::from_value::<Jwk>(k.clone())
                .ok()
                .and_then(|jwk| verification_key(&jwk))
            {
                Some(v) => keys.push(v),
                None => skipped += 1,
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "no usable signature key (RSA, EC P-256/P-384 or Ed25519) among {} keys",
                list.len()
            ));
        }
        Ok(Jwks { keys, skipped })
    }

    /// How many keys can verify tokens.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token's header: by `kid` when it has one, else the only key that fits
    /// the algorithm.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerificationKey, TokenError> {
        let fits = |k: &&VerificationKey| {
            k.family.verifies(alg) && k.alg.as_deref().is_none_or(|a| a == alg_name(alg))
        };
        match kid {
            Some(kid) => {
                let shown: String = kid.chars().take(64).collect();
                let Some(k) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) else {
                    return err(format!("no key with kid {shown:?} in the JWKS"));
                };
                if !fits(&k) {
                    return err(format!(
                        "key {shown:?} does not verify {} signatures",
                        alg_name(alg)
                    ));
                }
                Ok(k)
            }
            None => {
                let mut it = self.keys.iter().filter(fits);
                match (it.next(), it.next()) {
                    (Some(k), None) => Ok(k),
                    (None, _) => err(format!("no key in the JWKS verifies {}", alg_name(alg))),
                    (Some(_), Some(_)) => err("the token has no kid and several keys fit"),
                }
            }
        }
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    use Algorithm::*;
    match alg {
        HS256 => "HS256",
        HS384 => "HS384",
        HS512 => "HS512",
        ES256 => "ES256",
        ES384 => "ES384",
        RS256 => "RS256",
        RS384 => "RS384",
        RS512 => "RS512",
        PS256 => "PS256",
        PS384 => "PS384",
        PS512 => "PS512",
        EdDSA => "EdDSA",
    }
}

fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyFamily::EcP256,
            EllipticCurve::P384 => KeyFamily::EcP384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => KeyFamily::Ed,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerificationKey {
        kid: jwk.common.key_id.clone(),
        alg: jwk.common.key_algorithm.map(|a| format!("{a:?}")),
        family,
        key,
    })
}

/// Validate a signed JWT against `jwks` and `cfg` at `now_ms`.
pub fn validate_jwt(
    token: &str,
    jwks: &Jwks,
    cfg: &ValidatorConfig,
    now_ms: i64,
) -> Result<ValidToken, TokenError> {
    // The header's `alg` is parsed into jsonwebtoken's enum, which has no `none`: an unsigned
    // token fails here.
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| TokenError(format!("invalid JWT header: {e}")))?;
    if !ASYMMETRIC.contains(&header.alg) {
        return err(format!(
            "algorithm {} not accepted (asymmetric signatures only)",
            alg_name(header.alg)
        ));
    }
    let key = jwks.find(header.kid.as_deref(), header.alg)?;
    // Only the signature is checked by the library; the claims below, against `now_ms`.
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(token, &key.key, &validation)
        .map_err(|e| TokenError(format!("invalid JWT: {e}")))?;
    check_claims(&data.claims, cfg, now_ms, true)
}

/// Validate an unsecured JWT (`alg: none`, empty signature), as Kafka's
/// `OAuthBearerUnsecuredValidatorCallbackHandler`: nothing proves who made it.
pub fn validate_unsecured(
    token: &str,
    cfg: &ValidatorConfig,
    now_ms: i64,
) -> Result<ValidToken, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return err("not a compact JWS (three dot-separated parts)");
    };
    if !sig.is_empty() {
        return err("an unsecured JWS must have an empty signature");
    }
    let header = decode_json_part(h, "header")?;
    if header.get("alg").and_then(Value::as_str) != Some("none") {
        return err("an unsecured JWS must have 'none' for an algorithm");
    }
    let claims = decode_json_part(p, "claims")?;
    check_claims(&claims, cfg, now_ms, false)
}

/// base64url with or without padding, as Java's URL decoder.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn decode_json_part(part: &str, what: &str) -> Result<Value, TokenError> {
    let bytes = B64URL
        .decode(part)
        .map_err(|_| TokenError(format!("the JWS {what} is not base64url")))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError(format!("the JWS {what} is not JSON")))?;
    if !v.is_object() {
        return err(format!("the JWS {what} is not a JSON object"));
    }
    Ok(v)
}

/// A NumericDate claim in milliseconds (seconds, possibly fractional, in JSON).
fn numeric_date(claims: &Value, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(s) if s.is_finite() && (0.0..1e15).contains(&s) => Ok(Some((s * 1000.0) as i64)),
            _ => err(format!("the {name} claim is not a valid NumericDate")),
        },
    }
}

fn check_claims(
    claims: &Value,
    cfg: &ValidatorConfig,
    now_ms: i64,
    check_audience_issuer: bool,
) -> Result<ValidToken, TokenError> {
    if !claims.is_object() {
        return err("the JWT claims are not a JSON object");
    }
    let skew = cfg.clock_skew_ms.max(0);
    let Some(exp) = numeric_date(claims, "exp")? else {
        return err("the token has no exp claim");
    };
    if now_ms - skew >= exp {
        return err(format!(
            "the token expired at {exp} ms (now {now_ms} ms, clock skew {skew} ms)"
        ));
    }
    let iat = numeric_date(claims, "iat")?;
    if let Some(iat) = iat {
        if iat > now_ms + skew {
            return err(format!("the token is issued in the future (iat {iat} ms)"));
        }
        if exp <= iat {
            return err("the token's exp is not after its iat");
        }
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if nbf > now_ms + skew {
            return err(format!("the token is not valid before {nbf} ms"));
        }
    }
    if check_audience_issuer {
        if !cfg.expected_audience.is_empty() {
            let aud: Vec<&str> = match claims.get("aud") {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !aud
                .iter()
                .any(|a| cfg.expected_audience.iter().any(|e| e == a))
            {
                return err("the token's aud does not contain an expected audience");
            }
        }
        if let Some(issuer) = &cfg.expected_issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return err("the token's iss is not the expected issuer");
            }
        }
    }
    let principal = match claims.get(&cfg.sub_claim_name) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            return err(format!(
                "the token has no {} claim with a non-empty string",
                cfg.sub_claim_name
            ))
        }
    };
    let scope: BTreeSet<String> = match claims.get(&cfg.scope_claim_name) {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => BTreeSet::new(),
    };
    if let Some(missing) = cfg.required_scope.iter().find(|s| !scope.contains(*s)) {
        return err(format!("the token lacks the required scope {missing:?}"));
    }
    Ok(ValidToken {
        principal,
        scope,
        expires_ms: exp,
        issued_at_ms: iat,
    })
}

/// The JSON error challenge of RFC 7628 section 3.2.2, as Kafka words it.
pub fn error_challenge(status: &str) -> String {
    format!("{{\"status\":\"{status}\"}}")
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// The token was refused: send this challenge (the JSON error) and expect `\x01`.
    Challenge(Vec<u8>),
    /// Authenticated: send an empty token.
    Done(ValidToken),
}

/// Why the exchange failed; `message` is what the client is told, `detail` what the broker
/// logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthBearerError {
    pub message: String,
    pub detail: String,
    /// The principal named by a valid token, when the failure came after validation.
    pub principal: Option<String>,
}

/// The server end of one exchange (Kafka's `OAuthBearerSaslServer`).
#[derive(Debug, Default)]
pub struct OAuthBearerServer {
    /// The JSON error sent, and why the token was refused.
    refused: Option<(String, TokenError)>,
}

impl OAuthBearerServer {
    pub fn new() -> OAuthBearerServer {
        OAuthBearerServer::default()
    }

    /// Take the client's message; `validate` checks the bearer token.
    pub fn step(
        &mut self,
        msg: &[u8],
        validate: impl FnOnce(&str) -> Result<ValidToken, TokenError>,
    ) -> Result<ServerStep, OAuthBearerError> {
        if let Some((json, why)) = self.refused.take() {
            // RFC 7628: after the error challenge the client sends %x01 and the exchange fails
            // with the error; anything else is a new attempt (Kafka allows it).
            if msg == [SEP] {
                return Err(OAuthBearerError {
                    message: json,
                    detail: why.0,
                    principal: None,
                });
            }
        }
        let first = ClientInitialResponse::parse(msg).map_err(|why| OAuthBearerError {
            message: MALFORMED_MESSAGE.into(),
            detail: format!("invalid OAUTHBEARER client first message: {why}"),
            principal: None,
        })?;
        let token = match validate(&first.token) {
            Ok(t) => t,
            Err(why) => {
                let json = error_challenge("invalid_token");
                let challenge = json.clone().into_bytes();
                self.refused = Some((json, why));
                return Ok(ServerStep::Challenge(challenge));
            }
        };
        if !first.authzid.is_empty() && first.authzid != token.principal {
            let message = format!(
                "Authentication failed: Client requested an authorization id ({}) that is different from the token's principal name ({})",
                first.authzid, token.principal
            );
            return Err(OAuthBearerError {
                detail: message.clone(),
                message,
                principal: Some(token.principal),
            });
        }
        Ok(ServerStep::Done(token))
    }

    /// Why the last token was refused, while the error challenge awaits the client's `\x01`.
    pub fn refusal(&self) -> Option<&TokenError> {
        self.refused.as_ref().map(|(_, why)| why)
    }
}

/// An unsecured token (`alg: none`), as Kafka's `OAuthBearerUnsecuredLoginCallbackHandler`
/// makes for `unsecuredLoginStringClaim_sub`: for tests and development.
pub fn unsecured_token(claims: &Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none"}"#),
        b64.encode(claims.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// A fresh P-256 key: its signing key and its JWK.
    fn ec_key(kid: &str) -> (EncodingKey, Value) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        assert_eq!(raw.len(), 65);
        let jwk = json!({"kty":"EC","crv":"P-256","kid":kid,"use":"sig","alg":"ES256",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..])});
        (EncodingKey::from_ec_der(&kp.serialize_der()), jwk)
    }

    /// A fixed 2048-bit RSA test key (ring cannot generate RSA keys): PKCS#1 DER and its JWK.
    fn rsa_key(kid: &str) -> (EncodingKey, Value) {
        let der = base64::engine::general_purpose::STANDARD
            .decode(include_str!("testdata/rsa2048.der.b64").trim())
            .unwrap();
        let (n, e) = include_str!("testdata/rsa2048.ne")
            .trim()
            .split_once(' ')
            .unwrap();
        let jwk = json!({"kty":"RSA","kid":kid,"n":n,"e":e});
        (EncodingKey::from_rsa_der(&der), jwk)
    }

    fn jwks(keys: &[&Value]) -> Jwks {
        Jwks::parse(&json!({ "keys": keys }).to_string()).unwrap()
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, key).unwrap()
    }

    fn claims() -> Value {
        json!({"sub":"alice","exp": NOW / 1000 + 600, "iat": NOW / 1000 - 10,
            "aud":["fjord","other"], "iss":"https://idp.example", "scope":"produce consume"})
    }

    fn cfg() -> ValidatorConfig {
        ValidatorConfig {
            expected_audience: vec!["fjord".into()],
            expected_issuer: Some("https://idp.example".into()),
            ..ValidatorConfig::default()
        }
    }

    #[test]
    fn valid_tokens() {
        let (ek, ej) = ec_key("ec1");
        let (rk, rj) = rsa_key("rsa1");
        let set = jwks(&[&ej, &rj]);
        assert_eq!(set.len(), 2);
        for (alg, kid, key) in [
            (Algorithm::ES256, "ec1", &ek),
            (Algorithm::RS256, "rsa1", &rk),
            (Algorithm::RS512, "rsa1", &rk),
            (Algorithm::PS256, "rsa1", &rk),
        ] {
            let t = validate_jwt(&sign(alg, Some(kid), key, &claims()), &set, &cfg(), NOW)
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(t.principal, "alice");
            assert_eq!(t.expires_ms, NOW + 600_000);
            assert_eq!(
                t.scope,
                ["consume", "produce"]
                    .map(String::from)
                    .into_iter()
                    .collect()
            );
        }
        // Without kid: the only key that verifies the algorithm.
        validate_jwt(
            &sign(Algorithm::ES256, None, &ek, &claims()),
            &set,
            &cfg(),
            NOW,
        )
        .unwrap();
        // Another principal claim; aud as a plain string; no expectations.
        let mut c = claims();
        c["client_id"] = json!("svc-1");
        c["aud"] = json!("fjord");
        let cfg2 = ValidatorConfig {
            sub_claim_name: "client_id".into(),
            ..cfg()
        };
        let t = validate_jwt(
            &sign(Algorithm::ES256, Some("ec1"), &ek, &c),
            &set,
            &cfg2,
            NOW,
        );
        assert_eq!(t.unwrap().principal, "svc-1");
        let t = validate_jwt(
            &sign(
                Algorithm::ES256,
                Some("ec1"),
                &ek,
                &json!({"sub":"bob","exp": NOW/1000 + 1}),
            ),
            &set,
            &ValidatorConfig::default(),
            NOW,
        );
        assert_eq!(t.unwrap().principal, "bob");
    }

    #[test]
    fn refused_tokens() {
        let (ek, ej) = ec_key("ec1");
        let (other, _) = ec_key("ec1");
        let set = jwks(&[&ej]);
        let check = |token: String, want: &str| {
            let e = validate_jwt(&token, &set, &cfg(), NOW).unwrap_err();
            assert!(e.0.contains(want), "{e} does not contain {want}");
        };
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = claims();
            f(&mut c);
            sign(Algorithm::ES256, Some("ec1"), &ek, &c)
        };
        check(with(&|c| c["exp"] = json!(NOW / 1000 - 31)), "expired");
        // Within the clock skew (30 s) still valid.
        let late = with(&|c| {
            c["exp"] = json!(NOW / 1000 - 29);
            c["iat"] = json!(NOW / 1000 - 60);
        });
        validate_jwt(&late, &set, &cfg(), NOW).unwrap();
        check(
            with(&|c| c["exp"] = json!(NOW / 1000 - 20)),
            "not after its iat",
        );
        check(
            with(&|c| c.as_object_mut().unwrap().remove("exp").map(drop).unwrap()),
            "no exp",
        );
        check(with(&|c| c["exp"] = json!("soon")), "NumericDate");
        check(with(&|c| c["aud"] = json!(["other"])), "aud");
        check(
            with(&|c| c.as_object_mut().unwrap().remove("aud").map(drop).unwrap()),
            "aud",
        );
        check(with(&|c| c["iss"] = json!("https://evil.example")), "iss");
        check(
            with(&|c| c["nbf"] = json!(NOW / 1000 + 120)),
            "not valid before",
        );
        check(with(&|c| c["iat"] = json!(NOW / 1000 + 120)), "future");
        check(with(&|c| c["sub"] = json!("  ")), "sub claim");
        check(with(&|c| c["sub"] = json!(42)), "sub claim");
        check(
            sign(Algorithm::ES256, Some("nope"), &ek, &claims()),
            "no key with kid",
        );
        check(
            sign(Algorithm::ES256, Some("ec1"), &other, &claims()),
            "invalid JWT",
        );
        // A signature moved onto other claims.
        let good = sign(Algorithm::ES256, Some("ec1"), &ek, &claims());
        let forged = with(&|c| c["sub"] = json!("admin"));
        let sig = good.rsplit('.').next().unwrap();
        let (body, _) = forged.rsplit_once('.').unwrap();
        check(format!("{body}.{sig}"), "invalid JWT");
        // alg none, HMAC with the public key as secret, and a key of the wrong family.
        check(unsecured_token(&claims()), "header");
        let hs = sign(
            Algorithm::HS256,
            Some("ec1"),
            &EncodingKey::from_secret(ej["x"].as_str().unwrap().as_bytes()),
            &claims(),
        );
        check(hs, "not accepted");
        let (rk, _) = rsa_key("ec1");
        check(
            sign(Algorithm::RS256, Some("ec1"), &rk, &claims()),
            "does not verify",
        );
        check("garbage".into(), "header");
        check("a.b.c".into(), "header");
    }

    #[test]
    fn jwks_parsing() {
        let (_, ej) = ec_key("ec1");
        assert!(Jwks::parse("not json").is_err());
        assert!(Jwks::parse("{}").is_err());
        assert!(Jwks::parse(r#"{"keys":[]}"#).is_err());
        assert!(Jwks::parse(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        let set = Jwks::parse(
            &json!({"keys":[ej, {"kty":"oct","k":"c2VjcmV0"}, {"kty":"weird"},
                {"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"}]})
            .to_string(),
        )
        .unwrap();
        assert_eq!((set.len(), set.skipped), (1, 3));
        assert!(format!("{set:?}").contains("ec1"));
    }

    #[test]
    fn unsecured() {
        let c = ValidatorConfig {
            clock_skew_ms: 0,
            ..ValidatorConfig::default()
        };
        let t = unsecured_token(&json!({"sub":"dev","exp": NOW/1000 + 60, "iat": NOW/1000}));
        let v = validate_unsecured(&t, &c, NOW).unwrap();
        assert_eq!((v.principal.as_str(), v.expires_ms), ("dev", NOW + 60_000));
        // Padding accepted, as Java's decoder.
        let padded = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE.encode(br#"{"alg":"none"}"#),
            base64::engine::general_purpose::URL_SAFE
                .encode(json!({"sub":"d","exp": NOW/1000+1}).to_string())
        );
        assert!(validate_unsecured(&padded, &c, NOW).is_ok());
        for (bad, want) in [
            (
                unsecured_token(&json!({"sub":"dev","exp": NOW/1000})),
                "expired",
            ),
            (unsecured_token(&json!({"sub":"dev"})), "no exp"),
            (unsecured_token(&json!({"exp": NOW/1000 + 60})), "sub"),
            (
                format!(
                    "{}sig",
                    unsecured_token(&json!({"sub":"a","exp": NOW/1000 + 60}))
                ),
                "empty signature",
            ),
            ("x.y".into(), "three"),
            ("!!.!!.".into(), "base64url"),
            (
                format!("{}.{}.", b64(br#"{"alg":"RS256"}"#), b64(b"{}")),
                "'none'",
            ),
            (
                format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(b"[1]")),
                "object",
            ),
        ] {
            let e = validate_unsecured(&bad, &c, NOW).unwrap_err();
            assert!(e.0.contains(want), "{e} does not contain {want}");
        }
        let scoped = ValidatorConfig {
            required_scope: vec!["admin".into()],
            ..c.clone()
        };
        let t = unsecured_token(&json!({"sub":"dev","exp": NOW/1000 + 60, "scope": ["read"]}));
        assert!(validate_unsecured(&t, &scoped, NOW)
            .unwrap_err()
            .0
            .contains("scope"));
    }

    #[test]
    fn initial_response() {
        let ext: BTreeMap<String, String> = [("traceId".to_string(), "abc 1".to_string())].into();
        let msg = ClientInitialResponse::encode("eyJ.eyJ.sig-_", &ext);
        let r = ClientInitialResponse::parse(&msg).unwrap();
        assert_eq!(r.token, "eyJ.eyJ.sig-_");
        assert_eq!(r.extensions, ext);
        assert_eq!(r.authzid, "");
        let r =
            ClientInitialResponse::parse(b"n,a=al=2Cice,\x01auth=bearer   tok==\x01\x01").unwrap();
        assert_eq!((r.authzid.as_str(), r.token.as_str()), ("al,ice", "tok=="));
        for bad in [
            &b""[..],
            b"n",
            b"n,,",
            b"n,,\x01",
            b"n,,\x01\x01",
            b"y,,\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer t\x01",
            b"n,,\x01auth=Basic t\x01\x01",
            b"n,,\x01auth=Bearer\x01\x01",
            b"n,,\x01auth=Bearer t!\x01\x01",
            b"n,,\x01auth=Bearer t\x01x1=v\x01\x01",
            b"n,,\x01auth=Bearer t\x01k=\x01\x01",
            b"n,,\x01auth=Bearer t\x01=v\x01\x01",
            b"n,,\x01auth=Bearer t\x01k=\xff\x01\x01",
            b"n,a=,\x01auth=Bearer t\x01\x01",
            b"n,a=x=2,\x01auth=Bearer t\x01\x01",
            b"n,b=x,\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer t\x01\x01\x01",
        ] {
            assert!(ClientInitialResponse::parse(bad).is_err(), "{bad:?}");
        }
        let long = [
            b"n,,\x01auth=Bearer ".as_slice(),
            &vec![b'a'; MAX_INITIAL_RESPONSE_BYTES],
            b"\x01\x01",
        ]
        .concat();
        assert!(ClientInitialResponse::parse(&long).is_err());
    }

    /// Fuzz-ish: random and mutated messages never panic the parser nor the validators.
    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let seed = rand::random::<u64>();
        eprintln!("garbage_never_panics seed {seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (ek, ej) = ec_key("ec1");
        let set = jwks(&[&ej]);
        let base = ClientInitialResponse::encode(
            &sign(Algorithm::ES256, Some("ec1"), &ek, &claims()),
            &BTreeMap::new(),
        );
        let alphabet = b"n,a=\x01.-_eyJ0Bearer auth=AQ\xff\x00{}\"";
        for _ in 0..3000 {
            let msg: Vec<u8> = if rng.gen_bool(0.5) {
                let len = rng.gen_range(0..64);
                (0..len)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect()
            } else {
                let mut m = base.clone();
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..m.len());
                    match rng.gen_range(0..3) {
                        0 => m[i] = rng.gen(),
                        1 => {
                            m.remove(i);
                        }
                        _ => m.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
                    }
                }
                m
            };
            let mut server = OAuthBearerServer::new();
            let _ = server.step(&msg, |t| {
                let _ = validate_unsecured(t, &cfg(), NOW);
                validate_jwt(t, &set, &cfg(), NOW)
            });
            let _ = server.step(&msg, |t| validate_unsecured(t, &cfg(), NOW));
        }
    }

    #[test]
    fn exchange() {
        let (ek, ej) = ec_key("ec1");
        let set = jwks(&[&ej]);
        let msg = |c: &Value, authz: &str| {
            let token = sign(Algorithm::ES256, Some("ec1"), &ek, c);
            let mut m = ClientInitialResponse::encode(&token, &BTreeMap::new());
            if !authz.is_empty() {
                m.splice(2..2, format!("a={authz}").into_bytes());
            }
            m
        };
        let validate = |t: &str| validate_jwt(t, &set, &cfg(), NOW);
        let mut s = OAuthBearerServer::new();
        match s.step(&msg(&claims(), ""), validate).unwrap() {
            ServerStep::Done(t) => assert_eq!(t.principal, "alice"),
            other => panic!("{other:?}"),
        }
        // A refused token: the JSON challenge, then %x01 fails with it.
        let mut s = OAuthBearerServer::new();
        let mut expired = claims();
        expired["exp"] = json!(NOW / 1000 - 3600);
        assert_eq!(
            s.step(&msg(&expired, ""), validate).unwrap(),
            ServerStep::Challenge(br#"{"status":"invalid_token"}"#.to_vec())
        );
        assert!(s.refusal().unwrap().0.contains("expired"));
        let e = s.step(b"\x01", validate).unwrap_err();
        assert_eq!(e.message, r#"{"status":"invalid_token"}"#);
        assert!(e.detail.contains("expired"));
        // An authorization id other than the token's principal.
        let e = OAuthBearerServer::new()
            .step(&msg(&claims(), "bob"), validate)
            .unwrap_err();
        assert!(e.message.contains("authorization id (bob)"));
        assert!(matches!(
            OAuthBearerServer::new().step(&msg(&claims(), "alice"), validate),
            Ok(ServerStep::Done(_))
        ));
        // Garbage first message: failed at once, Kafka's generic wording.
        let e = OAuthBearerServer::new()
            .step(b"\x01", validate)
            .unwrap_err();
        assert_eq!(e.message, MALFORMED_MESSAGE);
    }
}
