//! What one node's data plane needs from the state: [`node_view`], a pure
//! function the managers run for each agent and send it whole when it
//! changes. The agent turns it into bridges, VXLAN forwarding entries, DNS
//! answers and translation rules, and needs nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::Subnet;
use crate::model::{EndpointMode, NodeState, Protocol, PublishMode, Task};
use crate::state::{ClusterState, holds_addresses, is_managed};

/// One node's share of the cluster's networks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The networks this node has a task on (holding an address).
    pub networks: Vec<NetView>,
    /// The services with a task or a virtual address on one of those
    /// networks: what the node's DNS server answers and its rules balance.
    pub services: Vec<ServiceView>,
    /// Every port published through the routing mesh (`mode: ingress`),
    /// served on every node.
    #[serde(default)]
    pub published: Vec<PublishedView>,
}

/// A port of the routing mesh and where its connections go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedView {
    /// The service's full name (`shop_web`).
    pub service: String,
    /// The port on every node.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// The port in the containers.
    pub target: u16,
    /// Served by the agent's PROXY protocol v2 hop rather than the kernel.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The service's tasks that are up, each with its node's address: where
    /// new connections go.
    pub endpoints: Vec<Peer>,
    /// Every task of the service that holds its address, on a node that is
    /// not down: the endpoints, and those starting, unhealthy or shutting
    /// down. The mesh keeps routing to them and accepting their connections
    /// (a connection translated to a task that then leaves the endpoints
    /// goes on until the task ends), but sends them no new one.
    #[serde(default)]
    pub reachable: Vec<Peer>,
}

/// One network, as a node that runs its tasks sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetView {
    /// Engine name (`<stack>_<key>`).
    pub name: String,
    /// The stack that declares it (empty when none does any more).
    pub stack: String,
    /// Its key in the stack (`default` for the implicit one).
    pub key: String,
    /// Its subnet.
    pub subnet: Subnet,
    /// Its VXLAN id.
    pub vni: u32,
    /// This node's gateway on it (its bridge address, its DNS server).
    pub gateway: Ipv4Addr,
    /// No route out.
    pub internal: bool,
    /// The addresses of the network's containers on other nodes, each with
    /// the node's address: where VXLAN sends their frames.
    pub peers: Vec<Peer>,
}

/// A container address on another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Peer {
    /// The container's address.
    pub ip: Ipv4Addr,
    /// Its node's address (the VXLAN tunnel's far end).
    pub node: Ipv4Addr,
}

/// A service as the DNS servers and balancing rules of a node see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Service id.
    pub id: String,
    /// Stack name.
    pub stack: String,
    /// Short name (`web`).
    pub name: String,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: EndpointMode,
    /// Per network the service joins (among the node's networks).
    pub networks: Vec<ServiceNet>,
}

/// A service on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNet {
    /// The network's engine name.
    pub network: String,
    /// Its virtual address there (`vip` mode).
    pub vip: Option<Ipv4Addr>,
    /// Extra names on this network (the stack file's `aliases`).
    pub aliases: Vec<String>,
    /// The addresses of its tasks that are up (running, and healthy when
    /// they have a health check) on nodes that are not down: what `tasks.<name>`,
    /// a `dnsrr` name and the virtual address lead to.
    pub endpoints: Vec<Ipv4Addr>,
}

/// The IPv4 address of a node's `addr` (`ip:port`), if it is one.
pub fn node_ip(addr: &str) -> Option<Ipv4Addr> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches("https://").parse().ok()
}

/// Whether a task is an endpoint of its service: up, on a node that is not down.
fn is_endpoint(s: &ClusterState, t: &Task) -> bool {
    t.is_up() && t.desired_state == crate::model::DesiredState::Running && on_live_node(s, t)
}

/// Whether a task's node is known and not down.
fn on_live_node(s: &ClusterState, t: &Task) -> bool {
    t.node_id.as_ref().and_then(|n| s.nodes.get(n)).is_some_and(|n| n.state != NodeState::Down)
}

/// What `node` needs to know of the cluster's networks.
pub fn node_view(s: &ClusterState, node: &str) -> NodeView {
    // The node's networks: those it holds a slice of and has a task on.
    let mut mine: BTreeSet<&str> = BTreeSet::new();
    for t in s.tasks.of_node(node).filter(|t| holds_addresses(t)) {
        mine.extend(t.addresses.keys().map(String::as_str));
    }
    // No network here and no port of the mesh: nothing to know (and no look
    // at the cluster's nodes or tasks).
    let meshed = |svc: &crate::model::Service| svc.spec.task.ports.iter().any(|p| p.mode == PublishMode::Ingress);
    if mine.is_empty() && !s.services.values().any(meshed) {
        return NodeView::default();
    }
    let node_ips: BTreeMap<&str, Ipv4Addr> =
        s.nodes.values().filter_map(|n| node_ip(&n.addr).map(|ip| (n.id.as_str(), ip))).collect();
    let mut networks = Vec::new();
    for name in &mine {
        let Some(alloc) = s.net.networks.get(*name) else { continue };
        let Some(gateway) = alloc.gateway(node) else { continue };
        let declared = s
            .stacks
            .values()
            .find_map(|st| st.networks.iter().find(|(_, n)| n.name == *name && is_managed(n)).map(|(k, n)| (st, k, n)));
        let (stack, key, internal) = declared
            .map_or((String::new(), String::new(), false), |(st, k, n)| (st.name.clone(), k.clone(), n.internal));
        let mut peers: Vec<Peer> = alloc
            .tasks
            .keys()
            .filter_map(|ip| {
                let owner = alloc.node_of(*ip)?;
                (owner != node).then(|| node_ips.get(owner.as_str()).map(|n| Peer { ip: *ip, node: *n }))?
            })
            .collect();
        peers.sort();
        networks.push(NetView {
            name: (*name).to_string(),
            stack,
            key,
            subnet: alloc.subnet,
            vni: alloc.vni,
            gateway,
            internal,
            peers,
        });
    }
    let mut services = Vec::new();
    for svc in s.services.values() {
        let mut nets = Vec::new();
        for a in svc.spec.task.networks.iter().filter(|a| mine.contains(a.network.as_str())) {
            let Some(alloc) = s.net.networks.get(&a.network) else { continue };
            let mut endpoints: Vec<Ipv4Addr> = s
                .tasks_of(&svc.id)
                .filter(|t| is_endpoint(s, t))
                .filter_map(|t| t.addresses.get(&a.network).copied())
                .collect();
            endpoints.sort();
            endpoints.dedup();
            nets.push(ServiceNet {
                network: a.network.clone(),
                vip: alloc.vips.get(&svc.id).copied(),
                aliases: a.aliases.clone(),
                endpoints,
            });
        }
        if !nets.is_empty() {
            services.push(ServiceView {
                id: svc.id.clone(),
                stack: svc.stack.clone(),
                name: svc.spec.name.clone(),
                endpoint_mode: svc.spec.endpoint_mode,
                networks: nets,
            });
        }
    }
    NodeView { networks, services, published: published(s, &node_ips) }
}

/// Every ingress-published port of the cluster, with the up tasks of its
/// service (at their address on the service's first network that stackd
/// manages: any of them reaches the container through its node), and the
/// tasks that still hold their address.
fn published(s: &ClusterState, node_ips: &BTreeMap<&str, Ipv4Addr>) -> Vec<PublishedView> {
    let mut out = Vec::new();
    for svc in s.services.values() {
        let ports: Vec<_> = svc
            .spec
            .task
            .ports
            .iter()
            .filter(|p| p.mode == PublishMode::Ingress)
            .filter_map(|p| p.published.map(|pp| (pp, p.protocol, p.target, p.proxy_protocol)))
            .collect();
        if ports.is_empty() {
            continue;
        }
        // Where a task is reached: its address on the first network of its
        // own template (any of them reaches the container through its node).
        let peer = |t: &Task| {
            let ip = t.template.networks.iter().find_map(|a| t.addresses.get(&a.network))?;
            let node = node_ips.get(t.node_id.as_deref()?)?;
            Some(Peer { ip: *ip, node: *node })
        };
        let mut endpoints: Vec<Peer> = s.tasks_of(&svc.id).filter(|t| is_endpoint(s, t)).filter_map(peer).collect();
        endpoints.sort();
        let mut reachable: Vec<Peer> =
            s.tasks_of(&svc.id).filter(|t| holds_addresses(t) && on_live_node(s, t)).filter_map(peer).collect();
        reachable.sort();
        reachable.dedup();
        for (port, protocol, target, proxy_protocol) in ports {
            out.push(PublishedView {
                service: svc.name.clone(),
                port,
                protocol,
                target,
                proxy_protocol,
                endpoints: endpoints.clone(),
                reachable: reachable.clone(),
            });
        }
    }
    out.sort_by_key(|p| (p.port, p.protocol as u8));
    out
}
