//! Virtual addresses and the routing mesh in the node's kernel: pure rules
//! from the network view ([`plan`]), applied by [`crate::dataplane`].
//!
//! **Virtual addresses.** A service's VIP on a network is an address of
//! that network's bridge on every node that has the network (so the node
//! answers the containers' ARP for it), and a DNAT rule in `PREROUTING`
//! picks one of the service's up tasks at random, wherever it runs. Only
//! the destination changes: the task sees the caller's own address, and its
//! reply, sent straight back over the network (bridge or VXLAN), is
//! translated back by the caller's node (conntrack through `br_netfilter`).
//! A container that picks itself needs the bridge port's hairpin mode and a
//! source translation (its reply would not come back otherwise). Anything
//! else sent to a VIP block is rejected, so a VIP never reaches the node.
//!
//! **The routing mesh.** A port published through the mesh is translated
//! on every node, for connections to any of the node's own addresses: to a
//! task on this node (the task sees the client's address), or to a task on
//! another node, which the connection reaches through that node's LAN
//! address (a route in table [`MESH_TABLE`], used only by packets marked
//! [`MESH_MARK`]) with the source translated to this node's address (the
//! reply must come back here to be translated back). The backend's node
//! accepts connections to its published tasks in `DOCKER-USER`.
//!
//! Everything stackd adds lives in its own chains (`STACKD-*`), rewritten
//! whole with `iptables-restore --noflush`, and one jump from each built-in
//! chain it hooks; routes in its own table; VIPs only on its own bridges.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use stackd_core::model::{EndpointMode, Protocol};
use stackd_core::net::{NodeView, Peer, PublishedView};

use crate::dataplane::bridge_name;

/// The mark of packets of the routing mesh (a bit of its own).
pub const MESH_MARK: u32 = 0x0010_0000;

/// The routing table of the mesh's routes to other nodes' tasks.
pub const MESH_TABLE: u32 = 5354;

/// stackd's chains and the built-in chains they hang from: (table, chain, hooked from).
pub const JUMPS: [(&str, &str, &str); 7] = [
    ("mangle", "STACKD-MARK", "PREROUTING"),
    ("mangle", "STACKD-MARK", "OUTPUT"),
    ("nat", "STACKD-PRE", "PREROUTING"),
    ("nat", "STACKD-OUT", "OUTPUT"),
    ("nat", "STACKD-POST", "POSTROUTING"),
    ("filter", "STACKD-FWD", "DOCKER-USER"),
    ("filter", "STACKD-IN", "INPUT"),
];

/// What the node's kernel should have beyond the VXLAN devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// The `iptables-restore --noflush` input that rewrites stackd's chains.
    pub iptables: String,
    /// The mesh's routes: a task on another node → that node's address.
    pub routes: BTreeMap<Ipv4Addr, Ipv4Addr>,
    /// The VIPs each bridge must carry.
    pub vips: BTreeMap<String, BTreeSet<Ipv4Addr>>,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// DNAT rules that spread `matching` over `targets` evenly: the k-th of n
/// taken with probability 1/(n-k), the last always.
fn spread(out: &mut String, chain: &str, matching: &str, targets: &[String]) {
    let n = targets.len();
    for (k, t) in targets.iter().enumerate() {
        let left = n - k;
        if left > 1 {
            let p = 1.0 / left as f64;
            let _ = writeln!(
                out,
                "-A {chain} {matching} -m statistic --mode random --probability {p:.10} -j DNAT --to-destination {t}"
            );
        } else {
            let _ = writeln!(out, "-A {chain} {matching} -j DNAT --to-destination {t}");
        }
    }
}

/// How the mesh reaches the tasks of a published port: a route to those on
/// other nodes (through their node), and, for those on this node, the
/// acceptance of the other nodes' mesh. Every task that holds its address
/// ([`PublishedView::reachable`]), not only the endpoints: a task that
/// leaves the endpoints (shutting down, unhealthy) keeps its established
/// connections until it ends. Without its route, the next packet of such a
/// connection would leave through another interface than the one its
/// source was translated for, and the kernel drops the connection's
/// translation (`nf_nat_oif_changed`): the client hangs halfway through an
/// answer. New connections only go to the endpoints (the DNAT rules).
fn reach(rules: &mut Rules, fwd: &mut String, p: &PublishedView, node_ip: Ipv4Addr) {
    let pr = proto(p.protocol);
    // A view from a manager that sends no `reachable` yet: the endpoints.
    let tasks: BTreeSet<&Peer> = p.endpoints.iter().chain(&p.reachable).collect();
    for e in tasks {
        if e.node == node_ip {
            // This node's task: connections from the other nodes' mesh.
            let _ = writeln!(fwd, "-A STACKD-FWD -d {}/32 -p {pr} --dport {} -j ACCEPT", e.ip, p.target);
        } else {
            rules.routes.insert(e.ip, e.node);
        }
    }
}

/// The rules for `view` on the node whose LAN address is `node_ip`.
pub fn plan(view: &NodeView, node_ip: Ipv4Addr) -> Rules {
    let mark = format!("{MESH_MARK:#x}/{MESH_MARK:#x}");
    let mut rules = Rules::default();
    let bridges: BTreeMap<&str, String> = view.networks.iter().map(|n| (n.name.as_str(), bridge_name(n.vni))).collect();

    let (mut mangle, mut pre, mut out, mut post, mut fwd, mut input) =
        (String::new(), String::new(), String::new(), String::new(), String::new(), String::new());

    // Traffic within or to the cluster's networks is never the mesh's.
    for n in &view.networks {
        let _ = writeln!(mangle, "-A STACKD-MARK -d {} -j RETURN", n.subnet);
    }

    // Virtual addresses, on the networks this node has.
    let mut hairpin: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for svc in view.services.iter().filter(|s| s.endpoint_mode == EndpointMode::Vip) {
        for sn in &svc.networks {
            let (Some(vip), Some(bridge)) = (sn.vip, bridges.get(sn.network.as_str())) else { continue };
            rules.vips.entry(bridge.clone()).or_default().insert(vip);
            if sn.endpoints.is_empty() {
                continue;
            }
            let targets: Vec<String> = sn.endpoints.iter().map(Ipv4Addr::to_string).collect();
            spread(&mut pre, "STACKD-PRE", &format!("-d {vip}/32"), &targets);
            hairpin.extend(sn.endpoints.iter().copied());
        }
    }
    for n in &view.networks {
        // What a VIP rule did not take (no task up): never the node's or the mesh's.
        let _ = writeln!(pre, "-A STACKD-PRE -d {} -j RETURN", n.subnet);
        if let Some(block) = n.subnet.child(24, (1u64 << (24 - n.subnet.prefix)) - 1) {
            let _ = writeln!(input, "-A STACKD-IN -d {block} -j REJECT");
        }
    }
    // A container that reaches itself through its VIP: its reply must come
    // back through the bridge.
    for ip in &hairpin {
        let _ = writeln!(post, "-A STACKD-POST -s {ip}/32 -d {ip}/32 -m conntrack --ctstate DNAT -j MASQUERADE");
    }

    // The routing mesh.
    for p in &view.published {
        let pr = proto(p.protocol);
        let port = p.port;
        if p.proxy_protocol {
            // The agent's PROXY v2 hop serves the port (its own socket, marked
            // with SO_MARK): only the route to other nodes' tasks and their
            // acceptance here.
            reach(&mut rules, &mut fwd, p, node_ip);
            continue;
        }
        let _ = writeln!(
            mangle,
            "-A STACKD-MARK -m addrtype --dst-type LOCAL -p {pr} --dport {port} -j MARK --set-xmark {mark}"
        );
        reach(&mut rules, &mut fwd, p, node_ip);
        if p.endpoints.is_empty() {
            continue;
        }
        let targets: Vec<String> = p.endpoints.iter().map(|e| format!("{}:{}", e.ip, p.target)).collect();
        let matching = format!("-m addrtype --dst-type LOCAL -p {pr} --dport {port}");
        spread(&mut pre, "STACKD-PRE", &matching, &targets);
        spread(&mut out, "STACKD-OUT", &matching, &targets);
    }
    if !view.published.is_empty() {
        // To another node's task: from this node's address, so the reply comes back.
        let _ = writeln!(post, "-A STACKD-POST -m mark --mark {mark} ! -o stk-+ -j MASQUERADE");
        // From the node itself (127.0.0.1) to a task here.
        let _ = writeln!(post, "-A STACKD-POST -m mark --mark {mark} -s 127.0.0.0/8 -j MASQUERADE");
        let _ = writeln!(fwd, "-A STACKD-FWD -m mark --mark {mark} -j ACCEPT");
        let _ = writeln!(fwd, "-A STACKD-FWD -m conntrack --ctstate DNAT --ctdir REPLY -j ACCEPT");
        // route_localnet lets 127.0.0.1 be translated; nothing from outside may use it.
        let _ = writeln!(
            input,
            "-A STACKD-IN ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        );
    }

    let mut text = String::new();
    let _ = write!(text, "*mangle\n:STACKD-MARK - [0:0]\n{mangle}COMMIT\n");
    let _ =
        write!(text, "*nat\n:STACKD-PRE - [0:0]\n:STACKD-OUT - [0:0]\n:STACKD-POST - [0:0]\n{pre}{out}{post}COMMIT\n");
    let _ = write!(text, "*filter\n:STACKD-FWD - [0:0]\n:STACKD-IN - [0:0]\n{fwd}{input}COMMIT\n");
    rules.iptables = text;
    rules
}

#[cfg(test)]
mod tests {
    use stackd_core::net::{NetView, Peer, PublishedView, ServiceNet, ServiceView};

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("an address")
    }

    fn view(endpoints: &[&str]) -> NodeView {
        let eps: Vec<Ipv4Addr> = endpoints.iter().map(|e| ip(e)).collect();
        NodeView {
            networks: vec![NetView {
                name: "shop_default".into(),
                stack: "shop".into(),
                key: "default".into(),
                subnet: "10.192.0.0/20".parse().expect("subnet"),
                vni: 0x10_0000,
                gateway: ip("10.192.0.1"),
                internal: false,
                peers: Vec::new(),
            }],
            services: vec![ServiceView {
                id: "s1".into(),
                stack: "shop".into(),
                name: "web".into(),
                endpoint_mode: EndpointMode::Vip,
                networks: vec![ServiceNet {
                    network: "shop_default".into(),
                    vip: Some(ip("10.192.15.1")),
                    aliases: Vec::new(),
                    endpoints: eps.clone(),
                }],
            }],
            published: vec![PublishedView {
                service: "shop_web".into(),
                port: 18080,
                protocol: Protocol::Tcp,
                target: 8080,
                proxy_protocol: false,
                endpoints: peers(&eps),
                reachable: peers(&eps),
            }],
        }
    }

    /// Tasks at `ips`, those below .64 on node 10.9.0.1, the others on 10.9.0.2.
    fn peers(ips: &[Ipv4Addr]) -> Vec<Peer> {
        ips.iter()
            .map(|e| Peer { ip: *e, node: if e.octets()[3] < 64 { ip("10.9.0.1") } else { ip("10.9.0.2") } })
            .collect()
    }

    #[test]
    fn a_vip_spreads_evenly_over_its_tasks_and_keeps_the_source() {
        let r = plan(&view(&["10.192.0.2", "10.192.0.66", "10.192.0.67"]), ip("10.9.0.1"));
        let vip: Vec<&str> = r.iptables.lines().filter(|l| l.contains("-d 10.192.15.1/32")).collect();
        assert_eq!(vip.len(), 3, "{}", r.iptables);
        assert!(vip[0].contains("--probability 0.3333333333 -j DNAT --to-destination 10.192.0.2"), "{vip:?}");
        assert!(vip[1].contains("--probability 0.5000000000 -j DNAT --to-destination 10.192.0.66"), "{vip:?}");
        assert!(vip[2].ends_with("-j DNAT --to-destination 10.192.0.67"), "{vip:?}");
        // No source translation for VIP traffic but the hairpin of a task to itself.
        let snat: Vec<&str> =
            r.iptables.lines().filter(|l| l.contains("MASQUERADE") && l.contains("10.192.")).collect();
        assert!(snat.iter().all(|l| l.contains("--ctstate DNAT") && l.contains("-s 10.192.0.")), "{snat:?}");
        assert_eq!(r.vips["stk-100000"], BTreeSet::from([ip("10.192.15.1")]));
        assert!(r.iptables.contains("-A STACKD-IN -d 10.192.15.0/24 -j REJECT"));
    }

    #[test]
    fn the_mesh_routes_other_nodes_tasks_through_their_node() {
        let r = plan(&view(&["10.192.0.2", "10.192.0.66"]), ip("10.9.0.1"));
        assert_eq!(r.routes, BTreeMap::from([(ip("10.192.0.66"), ip("10.9.0.2"))]));
        let mesh: Vec<&str> = r.iptables.lines().filter(|l| l.starts_with("-A STACKD-PRE -m addrtype")).collect();
        assert_eq!(mesh.len(), 2);
        assert!(mesh[1].ends_with("--to-destination 10.192.0.66:8080"));
        // Locally started connections too, and this node's task accepts the others' mesh.
        assert!(r.iptables.contains("-A STACKD-OUT -m addrtype --dst-type LOCAL -p tcp --dport 18080"));
        assert!(r.iptables.contains("-A STACKD-FWD -d 10.192.0.2/32 -p tcp --dport 8080 -j ACCEPT"));
        assert!(!r.iptables.contains("-d 10.192.0.66/32 -p tcp --dport 8080 -j ACCEPT"));
        // The chains come whole, each table committed.
        assert_eq!(r.iptables.matches("COMMIT").count(), 3);
    }

    #[test]
    fn a_task_that_left_the_endpoints_keeps_its_route_and_acceptance_but_gets_no_new_connection() {
        // 10.192.0.67 (node 10.9.0.2) and 10.192.0.3 (this node) shut down: no
        // longer endpoints, still holding their addresses.
        let mut v = view(&["10.192.0.2", "10.192.0.66"]);
        v.published[0].reachable = peers(&[ip("10.192.0.2"), ip("10.192.0.3"), ip("10.192.0.66"), ip("10.192.0.67")]);
        let r = plan(&v, ip("10.9.0.1"));
        let dnat: Vec<&str> =
            r.iptables.lines().filter(|l| l.contains("--dport 18080") && l.contains("DNAT")).collect();
        assert_eq!(dnat.len(), 4, "2 endpoints, in PREROUTING and OUTPUT: {dnat:?}");
        assert!(!r.iptables.contains("10.192.0.67:8080") && !r.iptables.contains("10.192.0.3:8080"), "{}", r.iptables);
        // Their established connections still have a way: the route to the
        // other node's task, the acceptance of this node's task.
        assert_eq!(
            r.routes,
            BTreeMap::from([(ip("10.192.0.66"), ip("10.9.0.2")), (ip("10.192.0.67"), ip("10.9.0.2"))])
        );
        assert!(r.iptables.contains("-A STACKD-FWD -d 10.192.0.3/32 -p tcp --dport 8080 -j ACCEPT"), "{}", r.iptables);
        // The same with the PROXY protocol hop, and with no endpoint left.
        v.published[0].proxy_protocol = true;
        v.published[0].endpoints.clear();
        let r = plan(&v, ip("10.9.0.1"));
        assert_eq!(r.routes.len(), 2);
        assert!(r.iptables.contains("-A STACKD-FWD -d 10.192.0.3/32 -p tcp --dport 8080 -j ACCEPT"), "{}", r.iptables);
    }

    #[test]
    fn a_view_without_reachable_tasks_routes_to_the_endpoints() {
        // A manager that does not send `reachable` yet.
        let mut v = view(&["10.192.0.2", "10.192.0.66"]);
        v.published[0].reachable.clear();
        let r = plan(&v, ip("10.9.0.1"));
        assert_eq!(r.routes, BTreeMap::from([(ip("10.192.0.66"), ip("10.9.0.2"))]));
        assert!(r.iptables.contains("-A STACKD-FWD -d 10.192.0.2/32 -p tcp --dport 8080 -j ACCEPT"));
    }

    #[test]
    fn a_service_without_tasks_gets_no_translation() {
        let r = plan(&view(&[]), ip("10.9.0.1"));
        assert!(!r.iptables.contains("DNAT --to-destination"), "{}", r.iptables);
        assert!(r.routes.is_empty());
        // Its VIP is still carried, and rejected.
        assert_eq!(r.vips["stk-100000"].len(), 1);
    }
}
