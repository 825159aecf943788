//! TLS on the controller listener (`listener.security.protocol.map` maps it to `SSL`): Raft
//! RPCs between controllers and the brokers' controller clients (metadata fetches, requests to
//! the active controller) go over TLS. With `ssl.client.auth=required` only holders of a
//! certificate from the listener's truststore can reach the quorum at all, which is how a
//! controller listener is closed to everyone else (the quorum protocol has no other
//! authentication). The rustls configurations are built by the broker from Kafka's keys
//! (`fjord_broker::tls`); this module only uses them.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How long a TLS handshake on the controller listener may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A controller-listener connection: TCP, or TLS over TCP.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Conn for T {}

/// A boxed [`Conn`].
pub type BoxConn = Box<dyn Conn>;

/// The controller listener's TLS: the server side (its current configuration, so reloaded
/// certificates apply to new connections) and the client side of this node towards the other
/// controllers.
#[derive(Clone)]
pub struct QuorumTls {
    pub server: Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>,
    pub client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for QuorumTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuorumTls")
    }
}

/// Connect to `addr` (`host:port`) within `timeout`, with TLS when `tls` is set.
pub async fn connect(
    tls: Option<&Arc<rustls::ClientConfig>>,
    addr: &str,
    timeout: Duration,
) -> std::io::Result<BoxConn> {
    let work = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let Some(tls) = tls else {
            return Ok(Box::new(stream) as BoxConn);
        };
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host}: not a valid TLS server name: {e}"),
            )
        })?;
        let s = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await?;
        Ok(Box::new(s) as BoxConn)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// The server side of a new connection: the TLS handshake when `tls` is set.
pub async fn accept(tls: Option<&QuorumTls>, stream: TcpStream) -> std::io::Result<BoxConn> {
    stream.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from((tls.server)());
    let s = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
        })??;
    Ok(Box::new(s))
}
