//! The names a node answers, as a table built from its [`NodeView`], and
//! [`answer`], the pure decision for one question.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use hickory_proto::rr::RecordType;
use stackd_core::model::EndpointMode;
use stackd_core::net::{NodeView, Subnet};

/// The node's own containers: each address with the networks its container
/// is on (a container on two networks has an address on each; every one of
/// them maps to both networks).
pub type OwnAddresses = BTreeMap<Ipv4Addr, BTreeSet<String>>;

/// [`OwnAddresses`] from the address maps (`Task.addresses`: network → address)
/// of the node's tasks.
pub fn own_addresses<'a>(tasks: impl IntoIterator<Item = &'a BTreeMap<String, Ipv4Addr>>) -> OwnAddresses {
    let mut own = OwnAddresses::new();
    for addresses in tasks {
        let networks: BTreeSet<String> = addresses.keys().cloned().collect();
        for ip in addresses.values() {
            own.entry(*ip).or_default().extend(networks.iter().cloned());
        }
    }
    own
}

/// What the server does with one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name is ours: NOERROR with these A records, in a canonical
    /// (sorted) order the server rotates. Empty for a question other than
    /// `A` about a name that has addresses (NOERROR, no records: the name
    /// exists, it has no record of that type).
    Records(Vec<Ipv4Addr>),
    /// The name is ours but leads to no address now (a `dnsrr` service or
    /// `tasks.<name>` without a task up): NXDOMAIN.
    NxDomain,
    /// Not a name of a service on the asker's networks: ask the upstream
    /// resolvers.
    Forward,
    /// The asker is on none of this node's networks: REFUSED, so that the
    /// server is no open resolver.
    Refused,
}

/// One network's part of the table.
#[derive(Clone, Debug, Default)]
struct NetNames {
    /// The network's subnet: a source address in it is on the network.
    subnet: Option<Subnet>,
    /// The stack that declares the network (empty when none does).
    stack: String,
    /// Lower-case name → addresses (sorted, without duplicates; empty: a
    /// known name without any address now).
    names: HashMap<String, Vec<Ipv4Addr>>,
}

/// The names the node answers, per network, and who is on which network.
/// Built by [`Names::new`] from the node's view; read by [`answer`].
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Per network (engine name).
    networks: BTreeMap<String, NetNames>,
    /// The node's own containers' addresses and their networks.
    own: OwnAddresses,
}

impl Names {
    /// The table of `view`: for each service `web` of stack `shop` on each of
    /// its networks, `web`, `shop_web` and each alias lead to the virtual
    /// address (`vip` mode; the endpoints when the service has no virtual
    /// address there) or to the endpoints (`dnsrr`); `tasks.web`,
    /// `tasks.shop_web` and `tasks.<alias>` lead to the endpoints. Names
    /// several services share on a network lead to all their addresses (as
    /// Docker does). `own` tells the networks of the node's own containers.
    pub fn new(view: &NodeView, own: &OwnAddresses) -> Names {
        let mut networks: BTreeMap<String, NetNames> = view
            .networks
            .iter()
            .map(|n| {
                (n.name.clone(), NetNames { subnet: Some(n.subnet), stack: n.stack.clone(), names: HashMap::new() })
            })
            .collect();
        for svc in &view.services {
            for sn in &svc.networks {
                let Some(net) = networks.get_mut(&sn.network) else { continue };
                let service_addrs: &[Ipv4Addr] = match (svc.endpoint_mode, sn.vip) {
                    (EndpointMode::Vip, Some(vip)) => &[vip],
                    _ => &sn.endpoints,
                };
                let mut short = vec![svc.name.as_str()];
                let long = format!("{}_{}", svc.stack, svc.name);
                if !svc.stack.is_empty() {
                    short.push(&long);
                }
                short.extend(sn.aliases.iter().map(String::as_str));
                for name in short {
                    let Some(name) = normalize(name) else { continue };
                    net.names.entry(format!("tasks.{name}")).or_default().extend(&sn.endpoints);
                    net.names.entry(name).or_default().extend(service_addrs);
                }
            }
        }
        for net in networks.values_mut() {
            for addrs in net.names.values_mut() {
                addrs.sort_unstable();
                addrs.dedup();
            }
        }
        Names { networks, own: own.clone() }
    }

    /// The networks `asker` is on, among the node's: first the one whose
    /// subnet holds its address, then the others its container is on (by
    /// [`OwnAddresses`]), in name order.
    pub fn networks_of(&self, asker: Ipv4Addr) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        if let Some((name, _)) = self.networks.iter().find(|(_, n)| n.subnet.is_some_and(|s| s.contains(asker))) {
            out.push(name);
        }
        for name in self.own.get(&asker).into_iter().flatten() {
            if let Some((name, _)) = self.networks.get_key_value(name)
                && !out.contains(&name.as_str())
            {
                out.push(name);
            }
        }
        out
    }

    /// The stack of the asker's (first) network, if a stack declares it: the
    /// key of per-stack upstream resolvers.
    pub fn stack_of(&self, asker: Ipv4Addr) -> Option<&str> {
        let first = *self.networks_of(asker).first()?;
        self.networks.get(first).map(|n| n.stack.as_str()).filter(|s| !s.is_empty())
    }
}

/// The name in the table's form: ASCII lower case, without the trailing dot;
/// `None` when nothing is left.
fn normalize(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// What to answer `asker` (the query's source address) asking `qname`
/// (any case, with or without the trailing dot) for `qtype`.
///
/// The name is looked up on the asker's networks only ([`Names::networks_of`]),
/// the network of its source address first; the first network where the name
/// has addresses gives them. A name known on the asker's networks without
/// any address is [`Answer::NxDomain`]; a name known nowhere there is
/// [`Answer::Forward`]; an asker on none of the node's networks gets
/// [`Answer::Refused`].
pub fn answer(names: &Names, asker: Ipv4Addr, qname: &str, qtype: RecordType) -> Answer {
    let networks = names.networks_of(asker);
    if networks.is_empty() {
        return Answer::Refused;
    }
    let Some(qname) = normalize(qname) else { return Answer::Forward };
    let mut known = false;
    for net in networks {
        let Some(addrs) = names.networks.get(net).and_then(|n| n.names.get(&qname)) else { continue };
        known = true;
        if !addrs.is_empty() {
            return Answer::Records(if qtype == RecordType::A { addrs.clone() } else { Vec::new() });
        }
    }
    if known { Answer::NxDomain } else { Answer::Forward }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stackd_core::net::{NetView, ServiceNet, ServiceView};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    fn net(name: &str, stack: &str, subnet: &str, gateway: &str) -> NetView {
        NetView {
            name: name.into(),
            stack: stack.into(),
            key: "default".into(),
            subnet: subnet.parse().expect("test subnet"),
            vni: 1,
            gateway: ip(gateway),
            internal: false,
            peers: vec![],
        }
    }

    fn on(network: &str, vip: Option<&str>, aliases: &[&str], endpoints: &[&str]) -> ServiceNet {
        ServiceNet {
            network: network.into(),
            vip: vip.map(ip),
            aliases: aliases.iter().map(|a| (*a).to_string()).collect(),
            endpoints: endpoints.iter().map(|e| ip(e)).collect(),
        }
    }

    fn svc(stack: &str, name: &str, mode: EndpointMode, networks: Vec<ServiceNet>) -> ServiceView {
        ServiceView {
            id: format!("{stack}-{name}"),
            stack: stack.into(),
            name: name.into(),
            endpoint_mode: mode,
            networks,
        }
    }

    /// Stack `shop` with networks `shop_default` (10.1.0.0/24) and `shop_back`
    /// (10.2.0.0/24); stack `blog` with `blog_default` (10.3.0.0/24).
    fn view() -> NodeView {
        NodeView {
            networks: vec![
                net("shop_default", "shop", "10.1.0.0/24", "10.1.0.1"),
                net("shop_back", "shop", "10.2.0.0/24", "10.2.0.1"),
                net("blog_default", "blog", "10.3.0.0/24", "10.3.0.1"),
            ],
            services: vec![
                svc(
                    "shop",
                    "web",
                    EndpointMode::Vip,
                    vec![
                        on("shop_default", Some("10.1.0.200"), &["www"], &["10.1.0.12", "10.1.0.11"]),
                        on("shop_back", Some("10.2.0.200"), &["front"], &["10.2.0.11", "10.2.0.12"]),
                    ],
                ),
                svc("shop", "db", EndpointMode::Dnsrr, vec![on("shop_back", None, &[], &["10.2.0.22", "10.2.0.21"])]),
                svc("shop", "idle", EndpointMode::Dnsrr, vec![on("shop_default", None, &[], &[])]),
                svc("shop", "cold", EndpointMode::Vip, vec![on("shop_default", Some("10.1.0.201"), &[], &[])]),
                svc("shop", "novip", EndpointMode::Vip, vec![on("shop_default", None, &[], &["10.1.0.31"])]),
                svc(
                    "blog",
                    "web",
                    EndpointMode::Vip,
                    vec![on("blog_default", Some("10.3.0.200"), &[], &["10.3.0.11"])],
                ),
                svc("blog", "ghost", EndpointMode::Vip, vec![on("not_on_this_node", Some("10.9.0.200"), &[], &[])]),
            ],
            published: Vec::new(),
        }
    }

    fn names() -> Names {
        Names::new(&view(), &OwnAddresses::new())
    }

    fn a(names: &Names, asker: &str, q: &str) -> Answer {
        answer(names, ip(asker), q, RecordType::A)
    }

    fn recs(addrs: &[&str]) -> Answer {
        Answer::Records(addrs.iter().map(|a| ip(a)).collect())
    }

    #[test]
    fn service_names_answer_the_vip_on_the_askers_network() {
        let n = names();
        let asker = "10.1.0.50";
        for q in ["web", "shop_web", "www", "web.", "WEB", "Shop_Web.", "wWw."] {
            assert_eq!(a(&n, asker, q), recs(&["10.1.0.200"]), "{q}");
        }
        // The same service seen from its other network: that network's VIP and alias.
        assert_eq!(a(&n, "10.2.0.50", "web"), recs(&["10.2.0.200"]));
        assert_eq!(a(&n, "10.2.0.50", "front"), recs(&["10.2.0.200"]));
    }

    #[test]
    fn aliases_are_per_network() {
        let n = names();
        assert_eq!(a(&n, "10.1.0.50", "front"), Answer::Forward);
        assert_eq!(a(&n, "10.2.0.50", "www"), Answer::Forward);
    }

    #[test]
    fn tasks_names_answer_every_endpoint_of_the_network() {
        let n = names();
        for q in ["tasks.web", "tasks.shop_web", "TASKS.WEB.", "tasks.www"] {
            assert_eq!(a(&n, "10.1.0.50", q), recs(&["10.1.0.11", "10.1.0.12"]), "{q}");
        }
        assert_eq!(a(&n, "10.2.0.50", "tasks.front"), recs(&["10.2.0.11", "10.2.0.12"]));
        assert_eq!(a(&n, "10.2.0.50", "tasks.db"), recs(&["10.2.0.21", "10.2.0.22"]));
    }

    #[test]
    fn dnsrr_answers_the_endpoints() {
        let n = names();
        assert_eq!(a(&n, "10.2.0.50", "db"), recs(&["10.2.0.21", "10.2.0.22"]));
        assert_eq!(a(&n, "10.2.0.50", "shop_db"), recs(&["10.2.0.21", "10.2.0.22"]));
    }

    #[test]
    fn vip_mode_without_a_vip_answers_the_endpoints() {
        assert_eq!(a(&names(), "10.1.0.50", "novip"), recs(&["10.1.0.31"]));
    }

    #[test]
    fn services_without_endpoints() {
        let n = names();
        // vip: the virtual address stays (Swarm drops it: moby/moby#37623).
        assert_eq!(a(&n, "10.1.0.50", "cold"), recs(&["10.1.0.201"]));
        assert_eq!(answer(&n, ip("10.1.0.50"), "cold", RecordType::AAAA), Answer::Records(vec![]));
        // dnsrr and tasks.*: the name is ours, with no address: NXDOMAIN for every type.
        assert_eq!(a(&n, "10.1.0.50", "idle"), Answer::NxDomain);
        assert_eq!(a(&n, "10.1.0.50", "shop_idle"), Answer::NxDomain);
        assert_eq!(a(&n, "10.1.0.50", "tasks.idle"), Answer::NxDomain);
        assert_eq!(a(&n, "10.1.0.50", "tasks.cold"), Answer::NxDomain);
        assert_eq!(answer(&n, ip("10.1.0.50"), "tasks.cold", RecordType::AAAA), Answer::NxDomain);
    }

    #[test]
    fn other_record_types_of_a_known_name_are_empty_noerror() {
        let n = names();
        for t in [RecordType::AAAA, RecordType::MX, RecordType::TXT, RecordType::SRV] {
            assert_eq!(answer(&n, ip("10.1.0.50"), "web", t), Answer::Records(vec![]), "{t}");
            assert_eq!(answer(&n, ip("10.1.0.50"), "tasks.web", t), Answer::Records(vec![]), "{t}");
        }
        // Unknown names are forwarded whatever their type.
        assert_eq!(answer(&n, ip("10.1.0.50"), "example.com", RecordType::AAAA), Answer::Forward);
    }

    #[test]
    fn names_of_other_networks_are_forwarded() {
        let n = names();
        // db is on shop_back only.
        assert_eq!(a(&n, "10.1.0.50", "db"), Answer::Forward);
        assert_eq!(a(&n, "10.1.0.50", "tasks.db"), Answer::Forward);
        // The other stack's services.
        assert_eq!(a(&n, "10.1.0.50", "blog_web"), Answer::Forward);
        assert_eq!(a(&n, "10.3.0.50", "shop_web"), Answer::Forward);
        // Same short name, each stack its own.
        assert_eq!(a(&n, "10.3.0.50", "web"), recs(&["10.3.0.200"]));
        assert_eq!(a(&n, "10.1.0.50", "example.com"), Answer::Forward);
        assert_eq!(a(&n, "10.1.0.50", "web.example.com"), Answer::Forward);
        assert_eq!(a(&n, "10.1.0.50", "."), Answer::Forward);
        assert_eq!(a(&n, "10.1.0.50", ""), Answer::Forward);
    }

    #[test]
    fn askers_outside_every_network_are_refused() {
        let n = names();
        assert_eq!(a(&n, "192.168.1.5", "web"), Answer::Refused);
        assert_eq!(a(&n, "192.168.1.5", "example.com"), Answer::Refused);
        // A network of the service that is not on this node answers no one.
        assert_eq!(a(&n, "10.9.0.5", "ghost"), Answer::Refused);
    }

    #[test]
    fn a_container_on_two_networks_sees_both_its_own_first() {
        let own = own_addresses([&BTreeMap::from([
            ("shop_default".to_string(), ip("10.1.0.60")),
            ("shop_back".to_string(), ip("10.2.0.60")),
        ])]);
        let n = Names::new(&view(), &own);
        assert_eq!(n.networks_of(ip("10.1.0.60")), vec!["shop_default", "shop_back"]);
        assert_eq!(n.networks_of(ip("10.2.0.60")), vec!["shop_back", "shop_default"]);
        // From its shop_default address: web is that network's VIP; db (shop_back only) is found too.
        assert_eq!(a(&n, "10.1.0.60", "web"), recs(&["10.1.0.200"]));
        assert_eq!(a(&n, "10.1.0.60", "db"), recs(&["10.2.0.21", "10.2.0.22"]));
        assert_eq!(a(&n, "10.1.0.60", "front"), recs(&["10.2.0.200"]));
        // From its shop_back address: that network's VIP first.
        assert_eq!(a(&n, "10.2.0.60", "web"), recs(&["10.2.0.200"]));
        assert_eq!(a(&n, "10.2.0.60", "www"), recs(&["10.1.0.200"]));
        // Another container of shop_default does not see shop_back's names.
        assert_eq!(a(&n, "10.1.0.61", "db"), Answer::Forward);
    }

    #[test]
    fn own_addresses_outside_the_view_are_ignored() {
        let own = own_addresses([&BTreeMap::from([("gone".to_string(), ip("172.30.0.5"))])]);
        let n = Names::new(&view(), &own);
        assert_eq!(a(&n, "172.30.0.5", "web"), Answer::Refused);
    }

    #[test]
    fn a_name_shared_by_two_services_answers_both() {
        let mut v = view();
        v.services.push(svc(
            "shop",
            "api",
            EndpointMode::Vip,
            vec![on("shop_default", Some("10.1.0.202"), &["www"], &["10.1.0.41"])],
        ));
        let n = Names::new(&v, &OwnAddresses::new());
        assert_eq!(a(&n, "10.1.0.50", "www"), recs(&["10.1.0.200", "10.1.0.202"]));
        assert_eq!(a(&n, "10.1.0.50", "tasks.www"), recs(&["10.1.0.11", "10.1.0.12", "10.1.0.41"]));
    }

    #[test]
    fn stack_of_the_asker() {
        let n = names();
        assert_eq!(n.stack_of(ip("10.1.0.50")), Some("shop"));
        assert_eq!(n.stack_of(ip("10.3.0.50")), Some("blog"));
        assert_eq!(n.stack_of(ip("192.168.1.5")), None);
    }

    #[test]
    fn empty_view_refuses_everyone() {
        let n = Names::new(&NodeView::default(), &OwnAddresses::new());
        assert_eq!(a(&n, "10.1.0.50", "web"), Answer::Refused);
    }
}
