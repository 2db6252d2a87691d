//! The routing mesh's opt-in PROXY protocol v2 hop (issue 14, "The routing
//! mesh"): a userspace TCP proxy for one published port.
//!
//! # Why a userspace hop
//!
//! The mesh serves a published port on every node in the kernel: DNAT to a
//! healthy task, and SNAT (masquerade) when that task runs on another node,
//! so that the reply comes back through the node that holds the client's
//! connection. The SNAT is what loses the client's address: the task sees
//! the node's. A port published with `x-proxy-protocol: v2` is served by
//! this module instead. The agent itself listens on the published port,
//! opens its own connection to a task and starts it with a PROXY protocol
//! v2 header (haproxy's `proxy-protocol.txt`, §2.2) that carries the
//! client's address and port and the address and port it connected to.
//! Back-ends that understand the header (nginx `proxy_protocol`, haproxy
//! `accept-proxy`, Traefik, …) log and filter by the real client. Such a
//! back-end needs the header on every connection that reaches that port.
//!
//! # Flow
//!
//! ```text
//!  client ──TCP──▶ ProxyListener (node:published port)
//!                   │ over the cap?  ── yes ──▶ close at once (refused += 1)
//!                   │ pick a backend: round robin from the current list,
//!                   │   a connect failure or timeout → try the next one,
//!                   │   none answers → close the client (unserved += 1)
//!                   ▼
//!                  backend (task addr:port) ◀── header_v2(client, destination)
//!                   ◀════ copy_bidirectional ════▶   (half-close passed on)
//! ```
//!
//! One accept task per listener owns the socket and a `JoinSet` of the
//! connections' tasks. [`ProxyListener::set_backends`] swaps the list
//! that later connections pick from; established ones keep their backend.
//! [`ProxyListener::shutdown`] closes the socket at once (new connections
//! are refused by the kernel), lets established connections run for the
//! grace period, then closes the rest. Dropping a [`ProxyListener`] closes
//! the socket and every connection at once.
//!
//! # The header
//!
//! [`header_v2`]: the 12-byte signature, `0x21` (version 2, command PROXY),
//! `0x11` (TCP over IPv4) or `0x21` (TCP over IPv6), the length of the
//! address block (big-endian), then the source address, the destination
//! address, the source port and the destination port, in network order. No
//! TLVs. Both addresses must be of one family: an IPv4-mapped IPv6 address
//! (a dual-stack socket's view of an IPv4 client) is sent as IPv4, and when
//! the families still differ both are sent as IPv6, the IPv4 one mapped.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

/// The first 12 bytes of every PROXY protocol v2 header.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2 (high nibble), command PROXY (low nibble).
const VERSION_PROXY: u8 = 0x21;
/// AF_INET (high nibble), SOCK_STREAM (low nibble).
const TCP4: u8 = 0x11;
/// AF_INET6 (high nibble), SOCK_STREAM (low nibble).
const TCP6: u8 = 0x21;

/// How long the accept loop waits after an accept error (out of file
/// descriptors, typically) before it tries again, rather than spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The PROXY protocol v2 header announcing a TCP connection from `src` to
/// `dst` (see the module doc for the bytes and for mixed families).
pub fn header_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + 36);
    h.extend_from_slice(&SIGNATURE);
    h.push(VERSION_PROXY);
    match (src.ip().to_canonical(), dst.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(TCP4);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (s, d) => {
            h.push(TCP6);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
        }
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Why a listener could not start, or a connection was not served.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The published port cannot be listened on (taken by another process
    /// or a container's host port, not a local address, or below 1024
    /// without `CAP_NET_BIND_SERVICE`): retrying will not help until that
    /// changes; report it on the service.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// No backend accepted a connection within the connect timeout (or the
    /// list is empty): the client was closed. Counted, logged at debug.
    #[error("no backend answered ({tried} tried)")]
    NoBackend {
        /// How many backends were tried.
        tried: usize,
    },
    /// A connection broke (reset by either side): nothing to do.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

/// How a [`ProxyListener`] behaves.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// How long one backend may take to accept a connection before the next
    /// one is tried.
    pub connect_timeout: Duration,
    /// The most connections served at once; a connection beyond is accepted
    /// and closed at once (counted in [`ProxyStats::refused`]).
    pub max_connections: usize,
    /// The backends at start (see [`ProxyListener::set_backends`]).
    pub backends: Vec<SocketAddr>,
    /// The firewall mark of the connections to the backends (`SO_MARK`,
    /// needs `CAP_NET_ADMIN`): the routing mesh routes marked packets to a
    /// task on another node through that node. `None`: no mark.
    pub mark: Option<u32>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(2),
            max_connections: 10_000,
            backends: Vec::new(),
            mark: None,
        }
    }
}

/// A TCP connection to `addr`, its socket marked with `mark` first.
async fn connect_marked(addr: SocketAddr, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let Some(mark) = mark else { return TcpStream::connect(addr).await };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_mark(mark)?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    socket.connect(addr).await
}

/// A listener's counters since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections admitted (under the cap) and handed to a backend, or
    /// closed when none answered.
    pub accepted: u64,
    /// Connections closed at once because [`ProxyConfig::max_connections`]
    /// were open.
    pub refused: u64,
    /// Connect attempts to a backend that failed or timed out (a client
    /// served by its second choice counts one).
    pub backend_failures: u64,
    /// Admitted connections closed because no backend answered.
    pub unserved: u64,
    /// Connections open now (admitted and not yet closed).
    pub active: u64,
}

/// The connections a [`ProxyListener`] holds open now ([`ProxyStats::active`]),
/// readable without the listener.
#[derive(Clone, Debug)]
pub struct OpenConnections(Arc<Shared>);

impl OpenConnections {
    /// Connections admitted and not yet closed.
    pub fn get(&self) -> u64 {
        self.0.active.load(Ordering::Relaxed) as u64
    }
}

/// A published port served through the PROXY protocol v2 hop. See the
/// module doc.
#[derive(Debug)]
pub struct ProxyListener {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    /// Tells the accept task to stop, with the grace period.
    stop: Option<oneshot::Sender<Duration>>,
    accept_task: Option<JoinHandle<()>>,
}

/// What the accept task, its connections and the handle share.
#[derive(Debug)]
struct Shared {
    listen: SocketAddr,
    config: ProxyConfig,
    backends: RwLock<Arc<[SocketAddr]>>,
    /// The round robin's position: one step per admitted connection.
    next: AtomicUsize,
    accepted: AtomicU64,
    refused: AtomicU64,
    backend_failures: AtomicU64,
    unserved: AtomicU64,
    active: AtomicUsize,
}

impl ProxyListener {
    /// Listens on `addr` (port 0: an ephemeral port, see
    /// [`local_addr`](Self::local_addr)) and starts accepting in a task of
    /// the current tokio runtime.
    pub async fn bind(addr: SocketAddr, config: ProxyConfig) -> Result<ProxyListener, ProxyError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| ProxyError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| ProxyError::Bind { addr, source })?;
        let backends = normalized(config.backends.clone());
        let shared = Arc::new(Shared {
            listen: local_addr,
            config,
            backends: RwLock::new(backends),
            next: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            backend_failures: AtomicU64::new(0),
            unserved: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(ProxyListener { local_addr, shared, stop: Some(stop_tx), accept_task: Some(accept_task) })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the backends that new connections pick from (sorted and
    /// deduplicated, so the order given does not matter); established
    /// connections keep theirs. An empty list closes new clients.
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        *self.shared.backends.write().unwrap_or_else(PoisonError::into_inner) = normalized(backends);
    }

    /// The current backends, sorted.
    pub fn backends(&self) -> Vec<SocketAddr> {
        self.shared.backends.read().unwrap_or_else(PoisonError::into_inner).to_vec()
    }

    /// The counters now.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            backend_failures: s.backend_failures.load(Ordering::Relaxed),
            unserved: s.unserved.load(Ordering::Relaxed),
            active: s.active.load(Ordering::Relaxed) as u64,
        }
    }

    /// A handle on the count of connections open now, which outlives the
    /// listener (for the agent's usage reports).
    pub fn open_connections(&self) -> OpenConnections {
        OpenConnections(self.shared.clone())
    }

    /// Stops accepting at once (the socket is closed as soon as the accept
    /// task runs, whether or not the returned future is polled), lets the
    /// established connections run for up to `grace`, then closes those
    /// left. The future resolves when the last connection is closed: early
    /// when they all end within the grace.
    pub fn shutdown(mut self, grace: Duration) -> impl Future<Output = ()> + Send + 'static {
        if let Some(stop) = self.stop.take() {
            // The accept task is gone only if it panicked; nothing to stop then.
            let _ = stop.send(grace);
        }
        let task = self.accept_task.take();
        async move {
            if let Some(task) = task {
                let _ = task.await;
            }
        }
    }
}

impl Drop for ProxyListener {
    /// Closes the socket and every connection at once (no grace).
    fn drop(&mut self) {
        if let Some(task) = &self.accept_task {
            task.abort();
        }
    }
}

/// Sorted and deduplicated: a backend listed twice does not get twice the
/// connections, and the round robin does not depend on the caller's order.
fn normalized(mut backends: Vec<SocketAddr>) -> Arc<[SocketAddr]> {
    backends.sort_unstable();
    backends.dedup();
    backends.into()
}

/// Accepts until told to stop, then drains: the connections' tasks live in
/// `conns`, so that aborting this task (the handle dropped) closes them all.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<Duration>) {
    let mut conns = JoinSet::new();
    let grace = loop {
        tokio::select! {
            biased;
            grace = &mut stop => break grace.unwrap_or(Duration::ZERO),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => shared.admit(client, peer, &mut conns),
                Err(error) => {
                    if matches!(error.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                        debug!(listen = %shared.listen, %error, "accept failed");
                    } else {
                        warn!(listen = %shared.listen, %error, "accept failed; pausing");
                    }
                    tokio::select! {
                        biased;
                        grace = &mut stop => break grace.unwrap_or(Duration::ZERO),
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            },
        }
    };
    drop(listener);
    debug!(listen = %shared.listen, open = conns.len(), ?grace, "stopped accepting; draining");
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        debug!(listen = %shared.listen, open = conns.len(), "grace period over; closing the connections left");
        conns.shutdown().await;
    }
}

/// Counts a connection in [`Shared::active`] for as long as its task lives
/// (aborted included).
struct Active(Arc<Shared>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Serves `client` in a task of `conns`, or closes it when the cap is
    /// reached. Only the accept task calls this, so the check and the
    /// increment cannot race with another admission.
    fn admit(self: &Arc<Self>, client: TcpStream, peer: SocketAddr, conns: &mut JoinSet<()>) {
        if self.active.load(Ordering::Relaxed) >= self.config.max_connections {
            self.refused.fetch_add(1, Ordering::Relaxed);
            debug!(listen = %self.listen, %peer, limit = self.config.max_connections, "connection cap reached; closing");
            return;
        }
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        let active = Active(self.clone());
        conns.spawn(async move {
            let shared = &active.0;
            if let Err(error) = shared.serve(client, peer).await {
                debug!(listen = %shared.listen, %peer, %error, "connection ended");
            }
        });
    }

    /// One client's connection, from the choice of its backend to its end.
    async fn serve(&self, mut client: TcpStream, peer: SocketAddr) -> Result<(), ProxyError> {
        // The address the client connected to: the listener's, or the node's
        // address it reached when listening on a wildcard.
        let destination = client.local_addr()?;
        let (mut backend, _) = match self.connect_backend().await {
            Ok(b) => b,
            Err(e) => {
                self.unserved.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        // The header, then the client's first bytes, each in its own small
        // write: without NODELAY the second would wait for the backend's
        // delayed ACK.
        let _ = backend.set_nodelay(true);
        let _ = client.set_nodelay(true);
        backend.write_all(&header_v2(peer, destination)).await?;
        // Copies both ways; an EOF from one side is passed on as a write
        // shutdown to the other, and the copy goes on the other way.
        tokio::io::copy_bidirectional(&mut client, &mut backend).await?;
        Ok(())
    }

    /// A connection to the next backend in the round robin that accepts one.
    async fn connect_backend(&self) -> Result<(TcpStream, SocketAddr), ProxyError> {
        let backends = self.backends.read().unwrap_or_else(PoisonError::into_inner).clone();
        let n = backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let Some(&addr) = backends.get(start.wrapping_add(i) % n) else { continue };
            let error =
                match tokio::time::timeout(self.config.connect_timeout, connect_marked(addr, self.config.mark)).await {
                    Ok(Ok(stream)) => return Ok((stream, addr)),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {:?}", self.config.connect_timeout),
                };
            self.backend_failures.fetch_add(1, Ordering::Relaxed);
            debug!(listen = %self.listen, backend = %addr, %error, "backend connect failed; trying the next");
        }
        Err(ProxyError::NoBackend { tried: n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    const SIG: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    #[test]
    fn signature_is_the_specs() {
        assert_eq!(SIGNATURE, SIG);
    }

    #[test]
    fn tcp4_header() {
        let h = header_v2(addr("192.0.2.10:51000"), addr("198.51.100.1:443"));
        let mut expected = SIG.to_vec();
        expected.extend_from_slice(&[
            0x21, 0x11, 0x00, 0x0C, // v2 PROXY, TCP4, 12 bytes
            192, 0, 2, 10, // source address
            198, 51, 100, 1, // destination address
            0xC7, 0x38, // source port 51000
            0x01, 0xBB, // destination port 443
        ]);
        assert_eq!(h, expected);
        assert_eq!(h.len(), 16 + 12);
    }

    #[test]
    fn tcp6_header() {
        let h = header_v2(addr("[2001:db8::1]:51000"), addr("[2001:db8::2]:8080"));
        let mut expected = SIG.to_vec();
        expected.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]); // v2 PROXY, TCP6, 36 bytes
        expected.extend_from_slice(&[0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
        expected.extend_from_slice(&[0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02]);
        expected.extend_from_slice(&[0xC7, 0x38, 0x1F, 0x90]); // ports 51000, 8080
        assert_eq!(h, expected);
        assert_eq!(h.len(), 16 + 36);
    }

    #[test]
    fn ipv4_mapped_addresses_are_sent_as_ipv4() {
        // A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d.
        let mapped = header_v2(addr("[::ffff:192.0.2.10]:51000"), addr("[::ffff:198.51.100.1]:443"));
        assert_eq!(mapped, header_v2(addr("192.0.2.10:51000"), addr("198.51.100.1:443")));
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let h = header_v2(addr("[2001:db8::1]:1"), addr("192.0.2.1:2"));
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(&h[32..48], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 1]);
        assert_eq!(&h[48..52], &[0, 1, 0, 2]);
    }

    #[test]
    fn backends_are_sorted_and_deduplicated() {
        let b = normalized(vec![addr("10.0.0.2:80"), addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
        assert_eq!(&*b, &[addr("10.0.0.1:80"), addr("10.0.0.2:80")]);
    }
}
