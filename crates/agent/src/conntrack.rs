//! The routing mesh's open connections per service, as this node holds
//! them: for the autoscaler's `connections` target and the agent's
//! `/metrics`.
//!
//! The mesh is kernel DNAT ([`crate::rules`]): a connection to one of the
//! node's own addresses on a published port is translated to one of the
//! service's tasks, and the kernel's connection tracking table
//! (`/proc/net/nf_conntrack`, per network namespace: the agent's is the
//! node's) holds one entry per connection. [`Mesh::count`] counts the
//! entries that are
//!
//! - IPv4 TCP in state `ESTABLISHED` (an IPv6 line, another protocol or a
//!   connection opening or closing is skipped);
//! - to a port the node publishes through the mesh's kernel rules (the
//!   original destination port);
//! - answered by one of that service's tasks on its target port (the reply
//!   source), which the connection was translated to: the original
//!   destination is neither that task nor any address of a cluster network
//!   (a VIP, another container), so that a container's own connections to a
//!   task, and the pass-through of another node's mesh to a task here,
//!   never count.
//!
//! A port served by the PROXY protocol v2 hop ([`crate::proxy`]) has no
//! translation: its connections are the hop's own count, added by
//! [`Mesh::add_proxied`]. Every service published over TCP is counted, 0
//! when idle; one published over UDP only is not (UDP has no connections).
//!
//! [`parse_line`] is pure; [`Mesh::count`] reads any `BufRead`, so both are
//! tested on real-looking lines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufRead};
use std::net::Ipv4Addr;

use stackd_core::model::Protocol;
use stackd_core::net::{NodeView, Subnet};

/// The kernel's connection tracking table of the agent's network namespace.
pub(crate) const TABLE: &str = "/proc/net/nf_conntrack";

/// What counting needs of one tracked connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flow {
    /// Where the client sent it (the original destination).
    pub orig_dst: Ipv4Addr,
    /// The port it was sent to.
    pub orig_dport: u16,
    /// Who answers (the reply's source: the translated destination).
    pub reply_src: Ipv4Addr,
    /// The port that answers.
    pub reply_sport: u16,
}

/// One line of `/proc/net/nf_conntrack`, if it is an established IPv4 TCP
/// connection:
///
/// ```text
/// ipv4 2 tcp 6 431999 ESTABLISHED src=… dst=… sport=… dport=… [packets=… bytes=…]
///     src=… dst=… sport=… dport=… [packets=… bytes=…] [ASSURED] mark=… [zone=…] use=…
/// ```
///
/// The first `src dst sport dport` are the original direction, the second
/// the reply; flags (`[ASSURED]`, `[UNREPLIED]`) and other fields are skipped.
pub(crate) fn parse_line(line: &str) -> Option<Flow> {
    let mut words = line.split_whitespace();
    if words.next()? != "ipv4" {
        return None;
    }
    let _l3 = words.next()?;
    if words.next()? != "tcp" {
        return None;
    }
    let _l4 = words.next()?;
    let _timeout = words.next()?;
    if words.next()? != "ESTABLISHED" {
        return None;
    }
    // The original direction, then the reply.
    let mut tuples: [Tuple; 2] = Default::default();
    let mut direction: Option<usize> = None;
    for w in words {
        let Some((key, value)) = w.split_once('=') else { continue };
        if key == "src" {
            direction = Some(direction.map_or(0, |d| d + 1));
            if direction > Some(1) {
                break;
            }
        }
        let Some(t) = direction.and_then(|d| tuples.get_mut(d)) else { continue };
        match key {
            "src" => t.src = value.parse().ok(),
            "dst" => t.dst = value.parse().ok(),
            "sport" => t.sport = value.parse().ok(),
            "dport" => t.dport = value.parse().ok(),
            _ => {}
        }
    }
    let [orig, reply] = tuples;
    Some(Flow { orig_dst: orig.dst?, orig_dport: orig.dport?, reply_src: reply.src?, reply_sport: reply.sport? })
}

/// One direction of a line, as read so far.
#[derive(Default)]
struct Tuple {
    src: Option<Ipv4Addr>,
    dst: Option<Ipv4Addr>,
    sport: Option<u16>,
    dport: Option<u16>,
}

/// A port the mesh serves with kernel rules.
#[derive(Debug)]
struct Port {
    /// Index into [`Mesh::services`].
    service: usize,
    /// The port in the containers.
    target: u16,
    /// The service's tasks that hold an address (endpoints and the rest).
    tasks: HashSet<Ipv4Addr>,
}

/// The node's mesh ports and their services, from the network view.
#[derive(Debug, Default)]
pub(crate) struct Mesh {
    /// Every service published over TCP through the mesh, by full name.
    services: Vec<String>,
    /// Ports served by the kernel's rules.
    ports: HashMap<u16, Port>,
    /// Ports served by the PROXY protocol hop → service index.
    proxied: HashMap<u16, usize>,
    /// The cluster networks' subnets on this node (VIPs and containers).
    subnets: Vec<Subnet>,
}

impl Mesh {
    /// The mesh of `view`.
    pub(crate) fn new(view: &NodeView) -> Mesh {
        let mut mesh = Mesh { subnets: view.networks.iter().map(|n| n.subnet).collect(), ..Mesh::default() };
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for p in view.published.iter().filter(|p| p.protocol == Protocol::Tcp) {
            let service = *index.entry(p.service.as_str()).or_insert_with(|| {
                mesh.services.push(p.service.clone());
                mesh.services.len() - 1
            });
            if p.proxy_protocol {
                mesh.proxied.insert(p.port, service);
                continue;
            }
            let tasks = p.endpoints.iter().chain(&p.reachable).map(|e| e.ip).collect();
            mesh.ports.insert(p.port, Port { service, target: p.target, tasks });
        }
        mesh
    }

    /// Whether the mesh publishes nothing over TCP (nothing to count).
    pub(crate) fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Whether the kernel's table is needed (a port served by kernel rules).
    pub(crate) fn needs_table(&self) -> bool {
        !self.ports.is_empty()
    }

    /// The service a flow is a mesh connection of, if any.
    fn service_of(&self, f: &Flow) -> Option<usize> {
        let port = self.ports.get(&f.orig_dport)?;
        let translated = f.orig_dst != f.reply_src && !self.subnets.iter().any(|n| n.contains(f.orig_dst));
        (translated && f.reply_sport == port.target && port.tasks.contains(&f.reply_src)).then_some(port.service)
    }

    /// Every service at 0.
    pub(crate) fn zero(&self) -> BTreeMap<String, u64> {
        self.services.iter().map(|s| (s.clone(), 0)).collect()
    }

    /// Counts the mesh's established connections per service in a
    /// conntrack table (see the module doc): every service, 0 when idle.
    pub(crate) fn count(&self, mut table: impl BufRead) -> io::Result<BTreeMap<String, u64>> {
        let mut counts = vec![0u64; self.services.len()];
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            if table.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let Ok(text) = std::str::from_utf8(&line) else { continue };
            if let Some(i) = parse_line(text).and_then(|f| self.service_of(&f))
                && let Some(c) = counts.get_mut(i)
            {
                *c += 1;
            }
        }
        Ok(self.services.iter().cloned().zip(counts).collect())
    }

    /// Adds the PROXY protocol hops' open connections (by published port).
    pub(crate) fn add_proxied(&self, counts: &mut BTreeMap<String, u64>, open: &BTreeMap<u16, u64>) {
        for (port, n) in open {
            let Some(service) = self.proxied.get(port).and_then(|i| self.services.get(*i)) else { continue };
            *counts.entry(service.clone()).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use stackd_core::net::{NetView, Peer, PublishedView};

    use super::*;

    const NODE: &str = "192.168.1.10";

    /// A client's connection to the node's port 8080, translated to a task.
    const MESH: &str = "ipv4     2 tcp      6 431995 ESTABLISHED src=192.168.1.50 dst=192.168.1.10 sport=53412 dport=8080 src=10.192.0.66 dst=192.168.1.50 sport=80 dport=53412 [ASSURED] mark=1048576 zone=0 use=2";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn view() -> NodeView {
        let peer = |s: &str| Peer { ip: ip(s), node: ip(NODE) };
        let published = |service: &str, port, target, proxy_protocol, protocol| PublishedView {
            service: service.into(),
            port,
            protocol,
            target,
            proxy_protocol,
            endpoints: vec![peer("10.192.0.66")],
            reachable: vec![peer("10.192.0.66"), peer("10.192.0.67")],
        };
        NodeView {
            networks: vec![NetView {
                name: "shop_default".into(),
                stack: "shop".into(),
                key: "default".into(),
                subnet: Subnet::new(ip("10.192.0.0"), 20).unwrap_or(stackd_core::net::DEFAULT_POOL),
                vni: 1,
                gateway: ip("10.192.0.1"),
                internal: false,
                peers: vec![],
            }],
            services: vec![],
            published: vec![
                published("shop_web", 8080, 80, false, Protocol::Tcp),
                published("shop_api", 9000, 9000, true, Protocol::Tcp),
                published("shop_dns", 5353, 53, false, Protocol::Udp),
                published("shop_idle", 7000, 7000, false, Protocol::Tcp),
            ],
        }
    }

    #[test]
    fn established_ipv4_tcp_lines_parse_with_or_without_flags_and_zones() {
        let want = Flow { orig_dst: ip(NODE), orig_dport: 8080, reply_src: ip("10.192.0.66"), reply_sport: 80 };
        assert_eq!(parse_line(MESH), Some(want));
        // Not yet assured, no zone, with accounting.
        let plain = "ipv4     2 tcp      6 299 ESTABLISHED src=192.168.1.50 dst=192.168.1.10 sport=53412 dport=8080 packets=3 bytes=164 src=10.192.0.66 dst=192.168.1.50 sport=80 dport=53412 packets=2 bytes=112 mark=0 secctx=system_u:object_r:unlabeled_t:s0 use=1";
        assert_eq!(parse_line(plain), Some(want));
        // Opening (unreplied), UDP, IPv6, and garbage: none.
        let syn = "ipv4     2 tcp      6 118 SYN_SENT src=192.168.1.50 dst=192.168.1.10 sport=53412 dport=8080 [UNREPLIED] src=10.192.0.66 dst=192.168.1.50 sport=80 dport=53412 mark=0 use=1";
        let udp = "ipv4     2 udp      17 28 src=192.168.1.50 dst=192.168.1.10 sport=5353 dport=5353 src=10.192.0.66 dst=192.168.1.50 sport=53 dport=5353 mark=0 use=1";
        let v6 = "ipv6     10 tcp      6 431999 ESTABLISHED src=fd00:0000:0000:0000:0000:0000:0000:0050 dst=fd00:0000:0000:0000:0000:0000:0000:0010 sport=40000 dport=8080 src=fd00:0000:0000:0000:0000:0000:0000:0010 dst=fd00:0000:0000:0000:0000:0000:0000:0050 sport=8080 dport=40000 [ASSURED] mark=0 zone=0 use=2";
        for line in [syn, udp, v6, "", "ipv4 2 tcp 6 1 ESTABLISHED src=1.2.3.4 dst=x"] {
            assert_eq!(parse_line(line), None, "{line}");
        }
    }

    #[test]
    fn only_the_meshs_translations_to_the_services_tasks_count() {
        let mesh = Mesh::new(&view());
        // The same connection twice (two clients), one to a task leaving the endpoints.
        let second = MESH.replace("53412", "53413");
        let draining = MESH.replace("10.192.0.66", "10.192.0.67");
        // Not the mesh's: another node's mesh passing through to a task
        // here (not translated here), a container through the VIP, a
        // closing connection, a port the mesh does not publish, a reply
        // from an address that is no task of the service.
        let through = "ipv4     2 tcp      6 431995 ESTABLISHED src=192.168.1.11 dst=10.192.0.66 sport=40001 dport=80 src=10.192.0.66 dst=192.168.1.11 sport=80 dport=40001 [ASSURED] mark=0 use=2";
        let vip = "ipv4     2 tcp      6 431995 ESTABLISHED src=10.192.0.70 dst=10.192.15.2 sport=40002 dport=8080 src=10.192.0.66 dst=10.192.0.70 sport=80 dport=40002 [ASSURED] mark=0 use=2";
        let closing = MESH.replace("ESTABLISHED", "TIME_WAIT");
        let other_port = MESH.replace("dport=8080", "dport=8081");
        let stranger = MESH.replace("10.192.0.66", "10.192.0.99");
        let table = [MESH, &second, &draining, through, vip, &closing, &other_port, &stranger].join("\n");
        let counts = mesh.count(table.as_bytes()).unwrap_or_default();
        assert_eq!(
            counts,
            BTreeMap::from([("shop_api".to_string(), 0), ("shop_idle".to_string(), 0), ("shop_web".to_string(), 3)]),
            "every TCP service, 0 when idle; UDP ones not at all"
        );
    }

    #[test]
    fn the_proxy_hops_connections_are_added_to_their_service() {
        let mesh = Mesh::new(&view());
        let mut counts = mesh.zero();
        mesh.add_proxied(&mut counts, &BTreeMap::from([(9000, 4), (8080, 9)]));
        assert_eq!(counts.get("shop_api"), Some(&4));
        assert_eq!(counts.get("shop_web"), Some(&0), "a kernel port's count is conntrack's");
        assert!(mesh.needs_table() && !mesh.is_empty());
        assert!(Mesh::new(&NodeView::default()).is_empty());
    }
}
