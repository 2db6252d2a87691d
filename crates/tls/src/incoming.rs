//! The TLS side of a manager's listener: a stream of handshaken connections
//! for tonic's `serve_with_incoming`.
//!
//! ```text
//!  accept loop ──TCP──► one task per connection: handshake (≤ 10 s)
//!      │                   ├─ ok ───► channel (64) ──► stream ──► tonic
//!      │                   └─ error ► debug log, dropped
//!      └─ stops when the stream is dropped (server shut down)
//! ```
//!
//! Handshakes run beside the accept loop, never in it: one slow or silent
//! client must not hold back everyone else's connection.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for tonic to take them.
const BACKLOG: usize = 64;
/// The pause after a failed accept (out of file descriptors, say), so that a
/// persistent error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The stream [`tls_incoming`] returns. It yields only connections whose
/// handshake succeeded; the `Result` is what tonic's `serve_with_incoming`
/// expects.
pub type TlsIncoming = ReceiverStream<std::io::Result<TlsStream<TcpStream>>>;

/// Accepts connections on `listener` and runs the TLS handshake of each with
/// `config` in a task of its own. Must be called within a tokio runtime. The
/// accept loop ends, closing the listener, when the stream is dropped.
pub fn tls_incoming(listener: TcpListener, config: Arc<ServerConfig>) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(BACKLOG);
    tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<std::io::Result<TlsStream<TcpStream>>>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = tx.closed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // tonic would skip an Err item without a pause: back off here.
                tracing::warn!(error = %e, "accepting a TCP connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "setting TCP_NODELAY failed");
            }
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // Err: the server is gone; the connection just closes.
                    let _ = tx.send(Ok(stream)).await;
                }
                // Joiners with another cluster's token abort their handshakes:
                // routine, not a warning.
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
