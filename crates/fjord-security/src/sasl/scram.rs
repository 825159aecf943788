//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them: no channel
//! binding (`n,,` or `n,a=<authzid>,`), the `tokenauth` extension refused (no delegation
//! tokens), iterations in Kafka's range.
//!
//! The server keeps a [`ScramCredential`] per user and mechanism — salt, stored key, server key
//! and iteration count — and never the password. [`ScramServer`] and [`ScramClient`] are the
//! two ends of one exchange: client-first, server-first, client-final, server-final.
//!
//! The primitives come from RustCrypto: `sha2` (the hash), `hmac` and `pbkdf2` (RFC 5802's
//! `Hi`), and `base64` for the messages' encoded fields.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::ct_eq;

/// Kafka's smallest accepted iteration count (`ScramMechanism.minIterations`).
pub const MIN_ITERATIONS: u32 = 4096;
/// Kafka's largest accepted iteration count (`ScramMechanism.maxIterations`).
pub const MAX_ITERATIONS: u32 = 16384;
/// The iteration count used when none is given (Kafka's `kafka-configs.sh` default).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// A message longer than this is refused before it is parsed (Kafka's messages are a few
/// hundred bytes; the frame itself is already bounded by `sasl.server.max.receive.size`).
pub const MAX_MESSAGE_BYTES: usize = 8192;

/// The two SCRAM mechanisms Kafka supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    /// The mechanism's code in AlterUserScramCredentials / DescribeUserScramCredentials
    /// (KIP-554: 1 is SHA-256, 2 is SHA-512).
    pub fn type_code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_type_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// RFC 5802's `Hi(password, salt, i)`: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }

    fn client_key(self, salted: &[u8]) -> Vec<u8> {
        self.hmac(salted, b"Client Key")
    }
}

/// What the server stores for one user and mechanism (Kafka's `ScramCredential`).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are as good as a password against this server: never print them.
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential for `password` with `salt` and `iterations`.
    pub fn new(mech: ScramMechanism, password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = mech.salted_password(password, salt, iterations);
        Self::from_salted_password(mech, &salted, salt.to_vec(), iterations)
    }

    /// The credential from an already salted password — what AlterUserScramCredentials
    /// carries (KIP-554), so the password never reaches the broker.
    pub fn from_salted_password(
        mech: ScramMechanism,
        salted: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Self {
        let client_key = mech.client_key(salted);
        ScramCredential {
            salt,
            stored_key: mech.hash(&client_key),
            server_key: mech.hmac(salted, b"Server Key"),
            iterations,
        }
    }
}

/// A fresh random salt (Kafka uses a random string as salt; any bytes do).
pub fn random_salt() -> Vec<u8> {
    use rand::RngCore;
    let mut salt = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut salt);
    salt
}

/// A fresh random nonce of printable characters (never `,`).
pub fn random_nonce() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Why an exchange failed. The text is safe to send to the client and to log (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// A message that does not follow RFC 5802's grammar.
    Malformed(String),
    /// Unknown user, wrong password or a server that could not prove it knows the password.
    InvalidCredentials,
    /// Something RFC 5802 allows that Kafka does not (channel binding, `tokenauth`).
    Unsupported(String),
    /// A message out of turn.
    State,
}

impl std::fmt::Display for ScramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramError::Malformed(why) => write!(f, "Invalid SCRAM message: {why}"),
            ScramError::InvalidCredentials => {
                write!(f, "Authentication failed: Invalid user credentials")
            }
            ScramError::Unsupported(why) => write!(f, "Unsupported SCRAM request: {why}"),
            ScramError::State => write!(f, "SCRAM message out of sequence"),
        }
    }
}

impl std::error::Error for ScramError {}

fn malformed(why: impl Into<String>) -> ScramError {
    ScramError::Malformed(why.into())
}

fn text(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE_BYTES {
        return Err(malformed(format!("longer than {MAX_MESSAGE_BYTES} bytes")));
    }
    std::str::from_utf8(msg).map_err(|_| malformed("not UTF-8"))
}

/// RFC 5802 `saslname`: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3);
        match esc {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// The value of attribute `key` (`r=...`) in `part`.
fn attr(part: Option<&str>, key: char) -> Result<&str, ScramError> {
    let part = part.ok_or_else(|| malformed(format!("missing attribute {key}")))?;
    let mut chars = part.chars();
    if chars.next() != Some(key) || chars.next() != Some('=') {
        return Err(malformed(format!("expected attribute {key}")));
    }
    Ok(&part[2..])
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, ScramError> {
    B64.decode(s)
        .map_err(|_| malformed(format!("{what} is not base64")))
}

fn printable_nonce(n: &str) -> Result<(), ScramError> {
    if n.is_empty() || !n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
        return Err(malformed("bad nonce"));
    }
    Ok(())
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name, unescaped.
    pub username: String,
    /// The authorization id (`a=`), empty when absent.
    pub authzid: String,
    pub nonce: String,
    /// `n=...,r=...[,ext]`: the part that goes into the AuthMessage.
    bare: String,
    /// `n,,` or `n,a=...,`: echoed (base64) in the client-final `c=`.
    gs2_header: String,
}

impl ClientFirst {
    pub fn parse(msg: &[u8]) -> Result<ClientFirst, ScramError> {
        let s = text(msg)?;
        let mut parts = s.splitn(3, ',');
        match parts.next() {
            Some("n") => {}
            Some("y") | Some("p") => {
                return Err(ScramError::Unsupported("channel binding".into()));
            }
            Some(_) | None => return Err(malformed("bad GS2 header")),
        }
        let authz = parts.next().ok_or_else(|| malformed("bad GS2 header"))?;
        let authzid = if authz.is_empty() {
            String::new()
        } else {
            decode_saslname(attr(Some(authz), 'a')?)?
        };
        let bare = parts
            .next()
            .ok_or_else(|| malformed("no client-first-bare"))?;
        let gs2_header = format!("n,{authz},");
        let mut fields = bare.split(',');
        let first = fields.next();
        if first.is_some_and(|f| f.starts_with("m=")) {
            return Err(ScramError::Unsupported("mandatory extension".into()));
        }
        let username = decode_saslname(attr(first, 'n')?)?;
        if username.is_empty() {
            return Err(malformed("empty user name"));
        }
        let nonce = attr(fields.next(), 'r')?.to_string();
        printable_nonce(&nonce)?;
        for ext in fields {
            let (key, value) = ext
                .split_once('=')
                .ok_or_else(|| malformed("bad extension"))?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(malformed("bad extension"));
            }
            if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
                return Err(ScramError::Unsupported("delegation tokens".into()));
            }
        }
        Ok(ClientFirst {
            username,
            authzid,
            nonce,
            bare: bare.to_string(),
            gs2_header,
        })
    }
}

#[derive(Debug)]
enum ServerState {
    ReceiveClientFirst,
    /// Sent server-first; waiting for client-final.
    ReceiveClientFinal(Box<Pending>),
    Done,
    Failed,
}

/// What the server remembers between server-first and client-final.
#[derive(Debug)]
struct Pending {
    first: ClientFirst,
    server_first: String,
    nonce: String,
    credential: ScramCredential,
}

/// The server end of one exchange. Feed it the client's messages in order; any error ends it.
#[derive(Debug)]
pub struct ScramServer {
    mech: ScramMechanism,
    state: ServerState,
}

impl ScramServer {
    pub fn new(mech: ScramMechanism) -> Self {
        ScramServer {
            mech,
            state: ServerState::ReceiveClientFirst,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mech
    }

    /// Step one: parse the client-first message. The caller looks up the user's credential and
    /// calls [`Self::server_first`] (or fails the exchange when there is none).
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, ScramError> {
        if !matches!(self.state, ServerState::ReceiveClientFirst) {
            self.state = ServerState::Failed;
            return Err(ScramError::State);
        }
        let first = ClientFirst::parse(msg).inspect_err(|_| self.state = ServerState::Failed)?;
        if !first.authzid.is_empty() && first.authzid != first.username {
            self.state = ServerState::Failed;
            return Err(ScramError::Unsupported(
                "an authorization id that is not the user name".into(),
            ));
        }
        Ok(first)
    }

    /// Step two: the server-first message for `first` with the user's `credential`, adding
    /// `server_nonce` (from [`random_nonce`]) to the client's nonce.
    pub fn server_first(
        &mut self,
        first: ClientFirst,
        credential: ScramCredential,
        server_nonce: &str,
    ) -> Vec<u8> {
        let nonce = format!("{}{}", first.nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let out = server_first.clone().into_bytes();
        self.state = ServerState::ReceiveClientFinal(Box::new(Pending {
            first,
            server_first,
            nonce,
            credential,
        }));
        out
    }

    /// Step three: check the client-final message's proof; the server-final message on
    /// success. The exchange is over either way.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let ServerState::ReceiveClientFinal(pending) =
            std::mem::replace(&mut self.state, ServerState::Failed)
        else {
            return Err(ScramError::State);
        };
        let Pending {
            first,
            server_first,
            nonce,
            credential,
        } = *pending;
        let s = text(msg)?;
        let (without_proof, proof) = s.rsplit_once(",p=").ok_or_else(|| malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let channel = b64(attr(fields.next(), 'c')?, "channel binding")?;
        if channel != first.gs2_header.as_bytes() {
            return Err(malformed("channel binding does not match the GS2 header"));
        }
        let got_nonce = attr(fields.next(), 'r')?;
        if got_nonce != nonce {
            return Err(malformed(format!(
                "nonce does not match: got {got_nonce:?}, sent {nonce:?}"
            )));
        }
        let proof = b64(proof, "proof")?;
        let auth_message = format!("{},{},{}", first.bare, server_first, without_proof);
        let signature = self
            .mech
            .hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::InvalidCredentials);
        }
        let client_key = xor(&proof, &signature);
        if !ct_eq(&self.mech.hash(&client_key), &credential.stored_key) {
            return Err(ScramError::InvalidCredentials);
        }
        let server_signature = self
            .mech
            .hmac(&credential.server_key, auth_message.as_bytes());
        self.state = ServerState::Done;
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.state, ServerState::Done)
    }

    /// Whether the next message expected is the client-first one.
    pub fn is_awaiting_client_first(&self) -> bool {
        matches!(self.state, ServerState::ReceiveClientFirst)
    }

    /// The user of the exchange, once the client-first message was accepted.
    pub fn username(&self) -> Option<&str> {
        match &self.state {
            ServerState::ReceiveClientFinal(p) => Some(&p.first.username),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum ClientState {
    SendFirst,
    ReceiveServerFirst,
    ReceiveServerFinal { server_signature: Vec<u8> },
    Done,
    Failed,
}

/// The client end of one exchange (for fjord-client).
#[derive(Debug)]
pub struct ScramClient {
    mech: ScramMechanism,
    password: String,
    bare: String,
    nonce: String,
    state: ClientState,
}

impl ScramClient {
    pub fn new(mech: ScramMechanism, username: &str, password: &str, nonce: &str) -> Self {
        ScramClient {
            mech,
            password: password.to_string(),
            bare: format!("n={},r={nonce}", encode_saslname(username)),
            nonce: nonce.to_string(),
            state: ClientState::SendFirst,
        }
    }

    /// The client-first message.
    pub fn client_first(&mut self) -> Vec<u8> {
        self.state = ClientState::ReceiveServerFirst;
        format!("n,,{}", self.bare).into_bytes()
    }

    /// The client-final message answering the server-first one.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, ClientState::ReceiveServerFirst) {
            return Err(ScramError::State);
        }
        self.state = ClientState::Failed;
        let s = text(server_first)?;
        if let Some(e) = s.strip_prefix("e=") {
            return Err(malformed(format!("server error: {e}")));
        }
        let mut fields = s.split(',');
        let nonce = attr(fields.next(), 'r')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(malformed("server nonce does not extend the client's"));
        }
        printable_nonce(nonce)?;
        let salt = b64(attr(fields.next(), 's')?, "salt")?;
        let iterations: u32 = attr(fields.next(), 'i')?
            .parse()
            .map_err(|_| malformed("bad iteration count"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(malformed(format!(
                "iteration count {iterations} outside [{MIN_ITERATIONS}, {MAX_ITERATIONS}]"
            )));
        }
        let salted = self
            .mech
            .salted_password(self.password.as_bytes(), &salt, iterations);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{s},{without_proof}", self.bare);
        let client_key = self.mech.client_key(&salted);
        let stored_key = self.mech.hash(&client_key);
        let signature = self.mech.hmac(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &signature);
        let server_key = self.mech.hmac(&salted, b"Server Key");
        self.state = ClientState::ReceiveServerFinal {
            server_signature: self.mech.hmac(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Check the server-final message: the server proved it knows the credential.
    pub fn server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let ClientState::ReceiveServerFinal { server_signature } =
            std::mem::replace(&mut self.state, ClientState::Failed)
        else {
            return Err(ScramError::State);
        };
        let s = text(msg)?;
        if let Some(e) = s.strip_prefix("e=") {
            return Err(malformed(format!("server error: {e}")));
        }
        let v = b64(attr(s.split(',').next(), 'v')?, "server signature")?;
        if !ct_eq(&v, &server_signature) {
            return Err(ScramError::InvalidCredentials);
        }
        self.state = ClientState::Done;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677, section 3.
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> ScramCredential {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramCredential::new(ScramMechanism::Sha256, b"pencil", &salt, 4096)
    }

    #[test]
    fn rfc7677_server() {
        let mut server = ScramServer::new(ScramMechanism::Sha256);
        let first = server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(first.username, "user");
        let sf = server.server_first(first, rfc_credential(), RFC_SERVER_NONCE);
        assert_eq!(sf, RFC_SERVER_FIRST.as_bytes());
        let fin = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(fin, RFC_SERVER_FINAL.as_bytes());
        assert!(server.is_complete());
    }

    #[test]
    fn rfc7677_client() {
        let mut client = ScramClient::new(
            ScramMechanism::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        );
        assert_eq!(client.client_first(), RFC_CLIENT_FIRST.as_bytes());
        let fin = client.client_final(RFC_SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(fin, RFC_CLIENT_FINAL.as_bytes());
        client.server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
    }

    fn round_trip(mech: ScramMechanism, user: &str, stored: &str, tried: &str) -> bool {
        let salt = random_salt();
        let cred = ScramCredential::new(mech, stored.as_bytes(), &salt, DEFAULT_ITERATIONS);
        let mut client = ScramClient::new(mech, user, tried, &random_nonce());
        let mut server = ScramServer::new(mech);
        let first = server.client_first(&client.client_first()).unwrap();
        assert_eq!(first.username, user);
        let sf = server.server_first(first, cred, &random_nonce());
        let cf = client.client_final(&sf).unwrap();
        match server.client_final(&cf) {
            Ok(fin) => {
                client.server_final(&fin).unwrap();
                true
            }
            Err(e) => {
                assert_eq!(e, ScramError::InvalidCredentials);
                false
            }
        }
    }

    #[test]
    fn round_trips() {
        for mech in ScramMechanism::ALL {
            assert!(round_trip(mech, "alice", "secret", "secret"));
            assert!(round_trip(mech, "a,b=c", "pw", "pw"));
            assert!(!round_trip(mech, "alice", "secret", "wrong"));
        }
    }

    #[test]
    fn server_rejects_a_forged_signature() {
        let mut client = ScramClient::new(ScramMechanism::Sha512, "u", "p", "abc");
        let mut server = ScramServer::new(ScramMechanism::Sha512);
        let cred = ScramCredential::new(ScramMechanism::Sha512, b"p", b"salt", 4096);
        let first = server.client_first(&client.client_first()).unwrap();
        let sf = server.server_first(first, cred, "xyz");
        client.client_final(&sf).unwrap();
        assert_eq!(
            client.server_final(b"v=AAAA"),
            Err(ScramError::InvalidCredentials)
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        let bad: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=u,r=a",
            b"y,,n=u,r=a",
            b"n,,n=,r=a",
            b"n,,n=u",
            b"n,,n=u,r=",
            b"n,,r=a,n=u",
            b"n,,n=a=b,r=x",
            b"n,,n=u,r=a,tokenauth=true",
            b"n,,m=x,n=u,r=a",
            b"n,a=other,n=u,r=a",
            b"n,,n=\xff,r=a",
            b"n,,n=u,r=a,=",
        ];
        for msg in bad {
            let mut s = ScramServer::new(ScramMechanism::Sha256);
            assert!(
                s.client_first(msg).is_err(),
                "{:?}",
                String::from_utf8_lossy(msg)
            );
        }
        let long = vec![b'a'; MAX_MESSAGE_BYTES + 1];
        assert!(ScramServer::new(ScramMechanism::Sha256)
            .client_first(&long)
            .is_err());
        for fin in [
            "",
            "c=biws",
            "c=biws,r=x,p=AAAA",
            "c=bad!,r=x,p=AAAA",
            "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=!!",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
        ] {
            let mut server = ScramServer::new(ScramMechanism::Sha256);
            let first = server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
            server.server_first(first, rfc_credential(), RFC_SERVER_NONCE);
            assert!(server.client_final(fin.as_bytes()).is_err(), "{fin}");
            // Over after a failure.
            assert_eq!(
                server.client_final(RFC_CLIENT_FINAL.as_bytes()),
                Err(ScramError::State)
            );
        }
        for sf in [
            "",
            "e=other-error",
            "r=abc",
            "r=x,s=AA==,i=4096",
            "r=abcd,s=AA==,i=1",
            "r=abcd,s=AA==,i=x",
            "r=abcd,s=!,i=4096",
            "r=abc,s=AA==,i=4096",
        ] {
            let mut client = ScramClient::new(ScramMechanism::Sha256, "u", "p", "abc");
            client.client_first();
            assert!(client.client_final(sf.as_bytes()).is_err(), "{sf}");
        }
    }

    #[test]
    fn debug_hides_keys() {
        let text = format!("{:?}", rfc_credential());
        assert!(!text.contains("stored_key") && text.contains("4096"));
    }
}
