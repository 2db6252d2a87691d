//! The running server: one hickory [`Server`] per listen address (UDP and
//! TCP), a request handler that reads the current [`Names`], and the
//! forwarder for every other name.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as UpstreamDnsError, NetError};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use stackd_core::net::NodeView;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::names::{Answer, Names, OwnAddresses, answer};
use super::{DnsError, MAX_FORWARDS_IN_FLIGHT, MAX_UDP_PAYLOAD, TCP_IDLE_TIMEOUT, TTL};

/// Where names that are not ours go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Upstreams {
    /// The `nameserver` lines of the node's `/etc/resolv.conf` (port 53).
    #[default]
    System,
    /// These servers (UDP, then TCP for truncated answers). Empty: every
    /// forwarded question gets SERVFAIL.
    Servers(Vec<SocketAddr>),
}

/// How a [`DnsServer`] is set up.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// The port to listen on at every address: 53 in production (needs
    /// root or `CAP_NET_BIND_SERVICE`); tests take a high one, or 0 for an
    /// ephemeral port per address (the TCP listener then takes the port the
    /// UDP socket got).
    pub port: u16,
    /// The node's upstream resolvers.
    pub upstreams: Upstreams,
    /// How long one upstream attempt may take before SERVFAIL.
    pub upstream_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig { port: 53, upstreams: Upstreams::System, upstream_timeout: Duration::from_secs(3) }
    }
}

/// The upstream name servers of the node's `/etc/resolv.conf`.
pub fn system_upstreams() -> Result<Vec<SocketAddr>, DnsError> {
    let (config, _) = hickory_resolver::system_conf::read_system_conf().map_err(DnsError::Upstreams)?;
    Ok(config.name_servers().iter().map(|ns| SocketAddr::new(ns.ip, 53)).collect())
}

/// A stub resolver asking `servers`, for questions forwarded as they came
/// (fully qualified: no search domains, no hosts file).
fn resolver(servers: &[SocketAddr], timeout: Duration) -> Option<TokioResolver> {
    if servers.is_empty() {
        return None;
    }
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            NameServerConfig::new(s.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut opts = ResolverOpts::default();
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.ndots = 0;
    // The askers cache by the upstream's TTLs already; keep a small cache.
    opts.cache_size = 256;
    match TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(name_servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    {
        Ok(r) => Some(r),
        Err(error) => {
            warn!(%error, ?servers, "cannot build the upstream resolver; forwarded names get SERVFAIL");
            None
        }
    }
}

/// The upstream resolvers: the node's, and per stack (a stack's `dns:`).
struct Forwarder {
    default: Option<TokioResolver>,
    per_stack: RwLock<HashMap<String, TokioResolver>>,
    timeout: Duration,
}

impl Forwarder {
    fn for_stack(&self, stack: Option<&str>) -> Option<TokioResolver> {
        if let Some(stack) = stack
            && let Some(r) = self.per_stack.read().unwrap_or_else(PoisonError::into_inner).get(stack)
        {
            return Some(r.clone());
        }
        self.default.clone()
    }
}

/// What the handlers of every listener share.
struct Shared {
    names: RwLock<Arc<Names>>,
    forwarder: Forwarder,
    /// Bounds the questions waiting on an upstream at once.
    forwards: Semaphore,
    /// Turns the order of multi-address answers.
    rotation: AtomicUsize,
}

impl Shared {
    fn names(&self) -> Arc<Names> {
        self.names.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// The request handler of every listener.
struct Handler(Arc<Shared>);

/// The answer to one request before it is encoded.
struct Reply {
    code: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Reply {
        Reply { code, answers: Vec::new(), authorities: Vec::new() }
    }
}

/// `addrs` turned left by `by`: successive answers start at successive addresses.
pub(crate) fn rotate(mut addrs: Vec<Ipv4Addr>, by: usize) -> Vec<Ipv4Addr> {
    if !addrs.is_empty() {
        let n = by % addrs.len();
        addrs.rotate_left(n);
    }
    addrs
}

impl Handler {
    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else { return Reply::code(ResponseCode::FormErr) };
        let query = info.query;
        let asker = match request.src().ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(ip) => ip,
                None => return Reply::code(ResponseCode::Refused),
            },
        };
        if query.query_class() != DNSClass::IN {
            return Reply::code(ResponseCode::Refused);
        }
        let names = self.0.names();
        let qname = query.name().to_string();
        match answer(&names, asker, &qname, query.query_type()) {
            Answer::Records(addrs) => {
                let by = if addrs.len() > 1 { self.0.rotation.fetch_add(1, Ordering::Relaxed) } else { 0 };
                let owner = query.original().name().clone();
                let answers = rotate(addrs, by)
                    .into_iter()
                    .map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(ip))))
                    .collect();
                Reply { code: ResponseCode::NoError, answers, authorities: Vec::new() }
            }
            Answer::NxDomain => Reply::code(ResponseCode::NXDomain),
            Answer::Refused => Reply::code(ResponseCode::Refused),
            Answer::Forward => self.forward(names.stack_of(asker), query.original().name(), query.query_type()).await,
        }
    }

    async fn forward(&self, stack: Option<&str>, name: &Name, qtype: RecordType) -> Reply {
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT) {
            return Reply::code(ResponseCode::Refused);
        }
        let Some(resolver) = self.0.forwarder.for_stack(stack) else { return Reply::code(ResponseCode::ServFail) };
        let Ok(_permit) = self.0.forwards.try_acquire() else {
            debug!(%name, "too many forwarded questions in flight; SERVFAIL");
            return Reply::code(ResponseCode::ServFail);
        };
        let mut name = name.clone();
        name.set_fqdn(true);
        // The resolver's own timeout bounds each attempt; this bounds the whole.
        let limit = self.0.forwarder.timeout.saturating_mul(2);
        match tokio::time::timeout(limit, resolver.lookup(name.clone(), qtype)).await {
            Ok(Ok(lookup)) => Reply {
                code: ResponseCode::NoError,
                answers: lookup.answers().to_vec(),
                authorities: lookup.authorities().to_vec(),
            },
            Ok(Err(NetError::Dns(UpstreamDnsError::NoRecordsFound(no)))) => Reply {
                code: no.response_code,
                answers: Vec::new(),
                authorities: no.soa.map(|soa| vec![soa.into_record_of_rdata()]).unwrap_or_default(),
            },
            Ok(Err(NetError::Dns(UpstreamDnsError::ResponseCode(code)))) => Reply::code(code),
            Ok(Err(error)) => {
                debug!(%name, %error, "upstream failed; SERVFAIL");
                Reply::code(ResponseCode::ServFail)
            }
            Err(_) => {
                debug!(%name, "upstream timed out; SERVFAIL");
                Reply::code(ResponseCode::ServFail)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let reply = self.reply(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;
        metadata.response_code = reply.code;
        // EDNS in, EDNS out; its payload size is also the encoder's limit
        // (beyond it the answer is truncated, TC set: the asker retries on TCP).
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns
        });
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let message = builder.build(metadata, reply.answers.iter(), reply.authorities.iter(), [], []);
        match response.send_response(message).await {
            Ok(info) => info,
            Err(error) => {
                debug!(src = %request.src(), %error, "cannot send a DNS answer");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

/// One listen address: its hickory server (a UDP socket and a TCP listener).
struct Listener {
    addr: SocketAddr,
    server: Server<Handler>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Stops accepting; dropping the server aborts its tasks, closing the sockets.
        self.server.shutdown_token().cancel();
    }
}

/// The node's DNS server: the names of a [`NodeView`] on a set of listen
/// addresses (the gateways), both changeable at any time. Dropping it stops
/// every listener.
pub struct DnsServer {
    shared: Arc<Shared>,
    port: u16,
    listeners: BTreeMap<Ipv4Addr, Listener>,
}

impl DnsServer {
    /// A server with no names and no listener yet. With
    /// [`Upstreams::System`], an unreadable `/etc/resolv.conf` is logged and
    /// leaves no upstream (forwarded names get SERVFAIL).
    pub fn new(config: DnsConfig) -> DnsServer {
        let servers = match &config.upstreams {
            Upstreams::Servers(s) => s.clone(),
            Upstreams::System => system_upstreams().unwrap_or_else(|error| {
                warn!(%error, "no upstream resolver; names that are not the stacks' get SERVFAIL");
                Vec::new()
            }),
        };
        let forwarder = Forwarder {
            default: resolver(&servers, config.upstream_timeout),
            per_stack: RwLock::new(HashMap::new()),
            timeout: config.upstream_timeout,
        };
        let shared = Shared {
            names: RwLock::new(Arc::new(Names::default())),
            forwarder,
            forwards: Semaphore::new(MAX_FORWARDS_IN_FLIGHT),
            rotation: AtomicUsize::new(0),
        };
        DnsServer { shared: Arc::new(shared), port: config.port, listeners: BTreeMap::new() }
    }

    /// Answers from `names` from now on (the next question sees them).
    pub fn set_names(&self, names: Names) {
        *self.shared.names.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(names);
    }

    /// Answers from `view`, with `own` telling the networks of the node's
    /// own containers ([`Names::new`]).
    pub fn set_view(&self, view: &NodeView, own: &OwnAddresses) {
        self.set_names(Names::new(view, own));
    }

    /// Sends questions of the containers of `stack` to `servers` instead of
    /// the node's upstreams (a stack's `dns:`); an empty list goes back to
    /// the node's.
    pub fn set_stack_upstreams(&self, stack: &str, servers: &[SocketAddr]) {
        let mut map = self.shared.forwarder.per_stack.write().unwrap_or_else(PoisonError::into_inner);
        match resolver(servers, self.shared.forwarder.timeout) {
            Some(r) => map.insert(stack.to_string(), r),
            None => map.remove(stack),
        };
    }

    /// Listens on exactly `addrs` (at the configured port): keeps the
    /// listeners it has there, stops the others, and opens the missing ones
    /// (UDP and TCP). Must run inside a Tokio runtime. An address that
    /// cannot be bound (not yet on an interface, port taken) does not stop
    /// the others: every address is tried, the first failure is returned,
    /// and a later call tries the missing ones again.
    pub fn set_listeners(&mut self, addrs: impl IntoIterator<Item = Ipv4Addr>) -> Result<(), DnsError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(DnsError::NoRuntime);
        }
        let wanted: std::collections::BTreeSet<Ipv4Addr> = addrs.into_iter().collect();
        self.listeners.retain(|ip, l| {
            let keep = wanted.contains(ip);
            if !keep {
                info!(addr = %l.addr, "DNS server stops listening");
            }
            keep
        });
        let mut first_error = None;
        for ip in wanted {
            if self.listeners.contains_key(&ip) {
                continue;
            }
            match self.listen(ip) {
                Ok(l) => {
                    info!(addr = %l.addr, "DNS server listening (UDP and TCP)");
                    self.listeners.insert(ip, l);
                }
                Err(e) => {
                    warn!(error = %e, "DNS server cannot listen");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// [`set_view`](Self::set_view), then [`set_listeners`](Self::set_listeners)
    /// on the gateways of the view's networks.
    pub fn update(&mut self, view: &NodeView, own: &OwnAddresses) -> Result<(), DnsError> {
        self.set_view(view, own);
        self.set_listeners(view.networks.iter().map(|n| n.gateway))
    }

    /// The addresses it listens on now (UDP and TCP on each).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.values().map(|l| l.addr).collect()
    }

    fn listen(&self, ip: Ipv4Addr) -> Result<Listener, DnsError> {
        let bind_err = |addr: SocketAddr| move |source| DnsError::Bind { addr, source };
        let want = SocketAddr::from((ip, self.port));
        let udp = std::net::UdpSocket::bind(want).map_err(bind_err(want))?;
        let addr = udp.local_addr().map_err(bind_err(want))?;
        udp.set_nonblocking(true).map_err(bind_err(addr))?;
        let udp = tokio::net::UdpSocket::from_std(udp).map_err(bind_err(addr))?;
        let tcp = std::net::TcpListener::bind(addr).map_err(bind_err(addr))?;
        tcp.set_nonblocking(true).map_err(bind_err(addr))?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(bind_err(addr))?;
        let mut server = Server::new(Handler(self.shared.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, MAX_TCP_RESPONSE_BUFFER);
        Ok(Listener { addr, server })
    }
}

/// Responses queued per TCP connection.
const MAX_TCP_RESPONSE_BUFFER: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<Ipv4Addr> {
        s.iter().map(|a| a.parse().expect("test address")).collect()
    }

    #[test]
    fn rotation_turns_the_order() {
        let a = ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(rotate(a.clone(), 0), a);
        assert_eq!(rotate(a.clone(), 1), ips(&["10.0.0.2", "10.0.0.3", "10.0.0.1"]));
        assert_eq!(rotate(a.clone(), 5), ips(&["10.0.0.3", "10.0.0.1", "10.0.0.2"]));
        assert_eq!(rotate(Vec::new(), 7), Vec::<Ipv4Addr>::new());
    }

    #[test]
    fn set_listeners_outside_a_runtime_is_an_error() {
        let mut s =
            DnsServer::new(DnsConfig { port: 0, upstreams: Upstreams::Servers(vec![]), ..DnsConfig::default() });
        assert!(matches!(s.set_listeners([Ipv4Addr::LOCALHOST]), Err(DnsError::NoRuntime)));
    }
}
