//! The PROXY protocol v2 hop over real sockets on loopback, ephemeral
//! ports: fake backends that parse the header and say what they read, round
//! robin, a dead backend skipped, backends swapped, draining with a grace
//! period, and the connection cap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use stackd_agent::proxy::{ProxyConfig, ProxyListener, ProxyStats};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

/// A backend that reads the PROXY v2 header, answers one line
/// `ID SRC DST`, then echoes what it receives until EOF, then closes.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    async fn start(id: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(echo(id, stream));
            }
        });
        Backend { addr, connections, task }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn echo(id: &str, mut stream: TcpStream) {
    let line = match read_header(&mut stream).await {
        Ok((src, dst)) => format!("{id} {src} {dst}\n"),
        Err(e) => format!("{id} bad-header {e}\n"),
    };
    if stream.write_all(line.as_bytes()).await.is_err() {
        return;
    }
    let (mut r, mut w) = stream.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

/// Parses a PROXY protocol v2 header (PROXY command, TCP4 or TCP6).
async fn read_header(stream: &mut TcpStream) -> Result<(SocketAddr, SocketAddr), String> {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await.map_err(|e| e.to_string())?;
    if fixed[..12] != *b"\r\n\r\n\0\r\nQUIT\n" {
        return Err(format!("signature {:?}", &fixed[..12]));
    }
    if fixed[12] != 0x21 {
        return Err(format!("version/command {:#x}", fixed[12]));
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let mut block = vec![0u8; len];
    stream.read_exact(&mut block).await.map_err(|e| e.to_string())?;
    let port = |i: usize| u16::from_be_bytes([block[i], block[i + 1]]);
    match (fixed[13], len) {
        (0x11, 12) => {
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(block[i], block[i + 1], block[i + 2], block[i + 3]));
            Ok((SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10))))
        }
        (0x21, 36) => {
            let ip = |i: usize| {
                let octets: [u8; 16] = block[i..i + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Ok((SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34))))
        }
        (family, len) => Err(format!("family {family:#x} with {len} bytes")),
    }
}

async fn proxy(backends: Vec<SocketAddr>) -> ProxyListener {
    proxy_with(ProxyConfig { backends, ..ProxyConfig::default() }).await
}

async fn proxy_with(config: ProxyConfig) -> ProxyListener {
    ProxyListener::bind("127.0.0.1:0".parse().expect("addr"), config).await.expect("bind proxy")
}

/// A client connected through the proxy, with the backend's first line read.
struct Client {
    reader: BufReader<TcpStream>,
    line: String,
}

impl Client {
    async fn connect(proxy: SocketAddr) -> Client {
        let stream =
            tokio::time::timeout(WAIT, TcpStream::connect(proxy)).await.expect("connect in time").expect("connect");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        tokio::time::timeout(WAIT, reader.read_line(&mut line)).await.expect("line in time").expect("read line");
        Client { reader, line }
    }

    /// The backend's id from the first line.
    fn backend(&self) -> &str {
        self.line.split_whitespace().next().unwrap_or("")
    }

    /// Sends `data` and reads it back.
    async fn roundtrip(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        self.reader.get_mut().write_all(data).await?;
        let mut back = vec![0u8; data.len()];
        tokio::time::timeout(WAIT, self.reader.read_exact(&mut back)).await.map_err(std::io::Error::other)??;
        Ok(back)
    }
}

/// Waits until `f(stats)` holds.
async fn until(p: &ProxyListener, what: &str, f: impl Fn(&ProxyStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = p.stats();
        if f(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` distinct loopback addresses where nothing listens (bound together,
/// then closed).
async fn dead_addrs(n: usize) -> Vec<SocketAddr> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    listeners.iter().map(|l| l.local_addr().expect("address")).collect()
}

/// Waits until connections to `addr` are refused, for at most `limit`.
async fn refused_within(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => assert!(Instant::now() < deadline, "still accepting after {limit:?}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads until EOF or an error; true when the peer closed (no data left).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(WAIT, stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sees_the_clients_address_and_data_half_closed() {
    let b = Backend::start("a").await;
    let p = proxy(vec![b.addr]).await;

    let mut client = TcpStream::connect(p.local_addr()).await.expect("connect");
    let me = client.local_addr().expect("client address");
    client.write_all(b"hello, ").await.expect("write");
    client.write_all(b"backend").await.expect("write");
    // Half-close: the backend sees EOF, and its echo still comes back.
    client.shutdown().await.expect("shutdown write");
    let mut all = String::new();
    tokio::time::timeout(WAIT, client.read_to_string(&mut all)).await.expect("in time").expect("read");
    assert_eq!(all, format!("a {me} {}\nhello, backend", p.local_addr()));

    until(&p, "the connection to close", |s| s.active == 0).await;
    assert_eq!(p.stats(), ProxyStats { accepted: 1, active: 0, ..ProxyStats::default() });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_client_is_announced_as_tcp6() {
    let b = Backend::start("a").await;
    let config = ProxyConfig { backends: vec![b.addr], ..ProxyConfig::default() };
    let p = match ProxyListener::bind("[::1]:0".parse().expect("addr"), config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED: no IPv6 loopback: {e}");
            return;
        }
    };
    let stream = TcpStream::connect(p.local_addr()).await.expect("connect");
    let me = stream.local_addr().expect("client address");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(WAIT, reader.read_line(&mut line)).await.expect("in time").expect("read");
    assert_eq!(line, format!("a {me} {}\n", p.local_addr()));
    assert!(me.is_ipv6());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_two_backends() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let p = proxy(vec![a.addr, b.addr]).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let c = Client::connect(p.local_addr()).await;
        seen.push(c.backend().to_string());
    }
    assert_eq!((a.connections(), b.connections()), (5, 5), "{seen:?}");
    // Strictly alternating.
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_skipped() {
    let live = Backend::start("live").await;
    let p = proxy(vec![dead_addrs(1).await[0], live.addr]).await;
    for _ in 0..6 {
        let c = Client::connect(p.local_addr()).await;
        assert_eq!(c.backend(), "live", "{}", c.line);
    }
    assert_eq!(live.connections(), 6);
    let s = p.stats();
    assert_eq!((s.accepted, s.unserved), (6, 0));
    // Every other connection tried the dead one first.
    assert_eq!(s.backend_failures, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_answering_closes_the_client() {
    let p = proxy(dead_addrs(2).await).await;
    let mut c = TcpStream::connect(p.local_addr()).await.expect("connect");
    assert!(closed(&mut c).await, "the client is closed");
    until(&p, "the connection to end", |s| s.active == 0).await;
    let s = p.stats();
    assert_eq!((s.accepted, s.backend_failures, s.unserved), (1, 2, 1));

    // No backend at all: closed too.
    p.set_backends(vec![]);
    let mut c = TcpStream::connect(p.local_addr()).await.expect("connect");
    assert!(closed(&mut c).await, "the client is closed");
    until(&p, "the second one counted", |s| s.unserved == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_backends_applies_to_new_connections_only() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let p = proxy(vec![a.addr]).await;
    let mut old = Client::connect(p.local_addr()).await;
    assert_eq!(old.backend(), "a");

    p.set_backends(vec![b.addr]);
    assert_eq!(p.backends(), vec![b.addr]);
    for _ in 0..3 {
        assert_eq!(Client::connect(p.local_addr()).await.backend(), "b");
    }
    // The established connection still goes to a.
    assert_eq!(old.roundtrip(b"still here").await.expect("roundtrip"), b"still here");
    assert_eq!((a.connections(), b.connections()), (1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_closes_after_the_grace() {
    let a = Backend::start("a").await;
    let p = proxy(vec![a.addr]).await;
    let addr = p.local_addr();
    let mut established = Client::connect(addr).await;

    let grace = Duration::from_millis(1500);
    let started = Instant::now();
    let drained = tokio::spawn(p.shutdown(grace));

    // New connections are refused by the kernel, well before the grace ends.
    refused_within(addr, Duration::from_millis(500)).await;
    // The established connection keeps working within the grace…
    assert_eq!(established.roundtrip(b"ping").await.expect("within the grace"), b"ping");
    assert!(started.elapsed() < grace, "the test was too slow to prove anything");

    // …and is closed once it is over.
    tokio::time::timeout(WAIT, drained).await.expect("drained in time").expect("drain task");
    assert!(started.elapsed() >= grace, "closed before the grace: {:?}", started.elapsed());
    assert!(closed(established.reader.get_mut()).await, "closed after the grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_early_when_the_connections_finish() {
    let a = Backend::start("a").await;
    let p = proxy(vec![a.addr]).await;
    let mut c = Client::connect(p.local_addr()).await;

    let started = Instant::now();
    let drained = tokio::spawn(p.shutdown(Duration::from_secs(30)));
    assert_eq!(c.roundtrip(b"last words").await.expect("roundtrip"), b"last words");
    c.reader.get_mut().shutdown().await.expect("half-close");
    assert!(closed(c.reader.get_mut()).await, "the backend closed after our EOF");

    tokio::time::timeout(WAIT, drained).await.expect("drained before the grace").expect("drain task");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_refuses_beyond_it() {
    let a = Backend::start("a").await;
    let p = proxy_with(ProxyConfig { backends: vec![a.addr], max_connections: 2, ..ProxyConfig::default() }).await;
    let mut first = Client::connect(p.local_addr()).await;
    let _second = Client::connect(p.local_addr()).await;
    assert_eq!(p.stats().active, 2);

    // The third is accepted by the kernel, then closed without reaching a backend.
    let mut third = TcpStream::connect(p.local_addr()).await.expect("connect");
    assert!(closed(&mut third).await, "closed over the cap");
    until(&p, "the refusal to be counted", |s| s.refused == 1).await;
    assert_eq!(a.connections(), 2);

    // Once one closes, there is room again.
    first.reader.get_mut().shutdown().await.expect("half-close");
    assert!(closed(first.reader.get_mut()).await);
    drop(first);
    until(&p, "the first connection to end", |s| s.active == 1).await;
    let fourth = Client::connect(p.local_addr()).await;
    assert_eq!(fourth.backend(), "a");
    let s = p.stats();
    assert_eq!((s.accepted, s.refused, s.active), (3, 1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_listener_closes_everything_at_once() {
    let a = Backend::start("a").await;
    let p = proxy(vec![a.addr]).await;
    let addr = p.local_addr();
    let mut c = Client::connect(addr).await;
    drop(p);
    assert!(closed(c.reader.get_mut()).await, "the connection is closed");
    refused_within(addr, Duration::from_millis(500)).await;
}
