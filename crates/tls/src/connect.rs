//! gRPC channels over our own TLS: a tonic custom connector that dials TCP and
//! runs a rustls handshake with the config it is given.
//!
//! ```text
//!  "host:port" | "https://host:port"
//!        │  the endpoint's URI is http://host:port: TLS is the connector's
//!        ▼  job, and tonic refuses an https:// URI without its own TLS
//!  TcpStream::connect ─► TlsConnector::connect(server name "stackd-manager")
//!        ─► TokioIo ─► HTTP/2 (ALPN h2), keep-alive pings every second
//! ```
//!
//! Every manager's certificate names [`crate::SERVER_NAME`], so the name
//! checked is the same whatever address was dialed: addresses change, the
//! CA's signature is what is trusted.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::SERVER_NAME;

/// How long TCP connect and TLS handshake may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings this often, idle or not: a peer behind a partition is found
/// dead by the missing pong, since its TCP connection never resets.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a ping may wait for its pong before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address asks for plaintext.
    #[error("{0}: stackd talks TLS only; give host:port or https://host:port")]
    Plaintext(String),
    /// The address is not `host:port` or `https://host:port`.
    #[error("invalid address {addr:?}: {reason}")]
    Address {
        /// The address given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Connecting failed (eager channels only): unreachable, refused, or
    /// the TLS handshake failed.
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// The address dialed.
        addr: String,
        /// What failed, causes included (tonic's own message is only
        /// "transport error").
        reason: String,
        /// The peer's certificate is not signed by the CA this side trusts
        /// (rustls's `UnknownIssuer` or `BadSignature`): the CA of another
        /// cluster, or the wrong file.
        unknown_issuer: bool,
    },
}

impl ConnectError {
    /// Whether the peer's certificate is not signed by the CA this side
    /// trusts: the CA given does not match the peer's cluster.
    pub fn is_unknown_issuer(&self) -> bool {
        matches!(self, ConnectError::Connect { unknown_issuer: true, .. })
    }
}

/// Whether a rustls error in `error`'s chain says the peer's certificate
/// is not signed by a trusted CA (rustls errors come wrapped in `io::Error`).
fn unknown_issuer(error: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::{CertificateError, Error as TlsError};
    let untrusted = |e: &TlsError| {
        matches!(e, TlsError::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature))
    };
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<TlsError>().is_some_and(untrusted) {
            return true;
        }
        let inner = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref);
        if inner.and_then(|i| i.downcast_ref::<TlsError>()).is_some_and(untrusted) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Connects to the manager at `addr` (`host:port` or `https://host:port`)
/// with `tls`, and fails if it cannot.
pub async fn channel(addr: &str, tls: Arc<ClientConfig>) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(addr)?;
    endpoint.connect_with_connector(connector(tls)).await.map_err(|e| ConnectError::Connect {
        addr: addr.to_string(),
        reason: causes(&e),
        unknown_issuer: unknown_issuer(&e),
    })
}

/// A channel to the manager at `addr` that connects on first use and
/// reconnects after a failure (Raft peers, whose managers come and go).
pub fn lazy_channel(addr: &str, tls: Arc<ClientConfig>) -> Result<Channel, ConnectError> {
    Ok(endpoint(addr)?.connect_with_connector_lazy(connector(tls)))
}

/// The `http://` endpoint for `addr`, with our timeouts and keep-alive.
fn endpoint(addr: &str) -> Result<Endpoint, ConnectError> {
    let authority = authority(addr)?;
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|_| ConnectError::Address { addr: addr.to_string(), reason: "not a valid host:port" })?;
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// `host:port` from `host:port` or `https://host:port[/]`.
fn authority(addr: &str) -> Result<&str, ConnectError> {
    let trimmed = addr.trim();
    let bad = |reason| ConnectError::Address { addr: addr.to_string(), reason };
    if trimmed.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
        return Err(ConnectError::Plaintext(addr.to_string()));
    }
    let rest = match trimmed.get(..8) {
        Some(s) if s.eq_ignore_ascii_case("https://") => &trimmed[8..],
        _ => trimmed,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains("://") {
        return Err(bad("expected host:port or https://host:port"));
    }
    let uri: Uri = format!("http://{rest}").parse().map_err(|_| bad("not a valid host:port"))?;
    if uri.path() != "/" || uri.query().is_some() || rest.contains('@') {
        return Err(bad("expected host:port, without a path"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.port_u16().is_none() {
        return Err(bad("no port"));
    }
    Ok(rest)
}

/// An error's message followed by its causes' messages, most specific last.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        // io::Error shows its inner error and also gives it as its source.
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The connector tonic calls for each new connection.
fn connector(
    tls: Arc<ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
> + Send
+ Clone
+ 'static {
    let tls = TlsConnector::from(tls);
    tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move {
            let invalid =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} in {uri}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            let tcp = TcpStream::connect(format!("{host}:{port}")).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(SERVER_NAME)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        }
    })
}

/// Whether a failed call never reached the peer: its causes include a
/// connect that was refused or found no route (the request was not sent, so
/// it is safe to send it elsewhere).
pub fn never_connected(status: &tonic::Status) -> bool {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::NotConnected
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            )
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_port_or_https() {
        assert_eq!(authority("10.0.0.1:4242").expect("plain"), "10.0.0.1:4242");
        assert_eq!(authority(" https://m1.example:4242/ ").expect("https"), "m1.example:4242");
        assert_eq!(authority("HTTPS://[::1]:4242").expect("v6"), "[::1]:4242");
        assert!(matches!(authority("http://10.0.0.1:4242"), Err(ConnectError::Plaintext(_))));
        assert!(matches!(authority("HTTP://10.0.0.1:4242"), Err(ConnectError::Plaintext(_))));
        for bad in ["10.0.0.1", "", ":4242", "unix:///tmp/sock", "grpc://h:1", "h:1/path", "user@h:1", "h:port"] {
            assert!(matches!(authority(bad), Err(ConnectError::Address { .. })), "{bad}");
        }
        let message = authority("http://h:1").expect_err("plaintext").to_string();
        assert!(message.contains("TLS only"), "{message}");
    }

    #[test]
    fn endpoints_speak_http_to_the_connector() {
        let endpoint = endpoint("https://h:1").expect("endpoint");
        assert_eq!(endpoint.uri().scheme_str(), Some("http"));
        assert_eq!(endpoint.uri().authority().map(|a| a.as_str()), Some("h:1"));
    }
}
