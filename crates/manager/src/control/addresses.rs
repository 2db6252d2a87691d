//! What `service inspect` and `node inspect` show of the cluster's networks,
//! read from the replicated state (pure functions, so tests need no Raft):
//! a service's virtual addresses, endpoints and published ports; a node's
//! slices, gateways and VXLAN ids.

use stackd_core::ClusterState;
use stackd_core::model::{DesiredState, NodeState, PublishMode, Service, Task};
use stackd_core::state::{holds_addresses, is_managed};
use stackd_proto::v1;

/// Whether a task is an endpoint of its service: up (running, and healthy
/// when it has a health check), wanted running, on a node that is not
/// down — as the nodes' data planes count it (`stackd_core::net::node_view`).
fn is_endpoint(s: &ClusterState, t: &Task) -> bool {
    t.is_up()
        && t.desired_state == DesiredState::Running
        && t.node_id.as_ref().and_then(|n| s.nodes.get(n)).is_some_and(|n| n.state != NodeState::Down)
}

/// The name of the node `id`, or the id when the node is gone.
fn node_name(s: &ClusterState, id: &str) -> String {
    s.nodes.get(id).map_or_else(|| id.to_string(), |n| n.name.clone())
}

/// Whether the stack `stack` declares the network `name` and stackd manages it.
fn managed(s: &ClusterState, stack: &str, name: &str) -> bool {
    s.stacks.get(stack).is_some_and(|st| st.networks.values().any(|n| n.name == name && is_managed(n)))
        || s.net.networks.contains_key(name)
}

/// The service on each network of its spec, in the spec's order: its
/// virtual address there and its up tasks' addresses, each with its node.
pub(super) fn service_networks(s: &ClusterState, svc: &Service) -> Vec<v1::ServiceNetwork> {
    let mut tasks: Vec<&Task> = s.tasks_of(&svc.id).filter(|t| is_endpoint(s, t)).collect();
    tasks.sort_by(|a, b| (a.slot, &a.node_id, &a.id).cmp(&(b.slot, &b.node_id, &b.id)));
    svc.spec
        .task
        .networks
        .iter()
        .map(|a| {
            let alloc = s.net.networks.get(&a.network);
            let endpoints = tasks
                .iter()
                .filter_map(|t| {
                    let ip = t.addresses.get(&a.network)?;
                    let node_id = t.node_id.clone().unwrap_or_default();
                    Some(v1::ServiceEndpoint {
                        task_id: t.id.clone(),
                        slot: t.slot,
                        ip: ip.to_string(),
                        node_name: node_name(s, &node_id),
                        node_id,
                    })
                })
                .collect();
            v1::ServiceNetwork {
                network: a.network.clone(),
                managed: managed(s, &svc.stack, &a.network),
                vip: alloc.and_then(|n| n.vips.get(&svc.id)).map(ToString::to_string).unwrap_or_default(),
                endpoints,
            }
        })
        .collect()
}

/// The service's published ports and, for `mode: host`, the nodes whose up
/// tasks serve them (an ingress port is served on every node).
pub(super) fn published_ports(s: &ClusterState, svc: &Service) -> Vec<v1::PublishedPort> {
    let mut hosts: Vec<String> = s
        .tasks_of(&svc.id)
        .filter(|t| is_endpoint(s, t))
        .filter_map(|t| t.node_id.as_deref().map(|n| node_name(s, n)))
        .collect();
    hosts.sort();
    hosts.dedup();
    svc.spec
        .task
        .ports
        .iter()
        .filter(|p| p.published.is_some())
        .map(|p| v1::PublishedPort {
            port: Some(v1::PortConfig::from(p)),
            nodes: if p.mode == PublishMode::Host { hosts.clone() } else { Vec::new() },
        })
        .collect()
}

/// The networks `node` holds a slice of, by name: subnet, the node's slices
/// and gateway, the VXLAN id, and how many addresses its tasks hold there.
pub(super) fn node_networks(s: &ClusterState, node: &str) -> Vec<v1::NodeNetwork> {
    s.net
        .networks
        .iter()
        .filter_map(|(name, alloc)| {
            let slices = alloc.slices.get(node)?;
            let stack = s
                .stacks
                .values()
                .find(|st| st.networks.values().any(|n| n.name == *name))
                .map(|st| st.name.clone())
                .unwrap_or_default();
            let tasks = s
                .tasks
                .values()
                .filter(|t| t.node_id.as_deref() == Some(node) && holds_addresses(t) && t.addresses.contains_key(name))
                .count();
            Some(v1::NodeNetwork {
                network: name.clone(),
                stack,
                subnet: alloc.subnet.to_string(),
                slices: slices.iter().filter_map(|i| alloc.slice(*i)).map(|sl| sl.to_string()).collect(),
                gateway: alloc.gateway(node).map(|ip| ip.to_string()).unwrap_or_default(),
                vni: alloc.vni,
                tasks: tasks as u64,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stackd_core::model::{
        EndpointMode, NetworkAttachment, NetworkSpec, Node, NodeRole, PortConfig, Service, ServiceMode, ServiceSpec,
        Stack, Task, TaskState, TaskTemplate, UpdateStatus,
    };

    use super::*;

    fn node(id: &str, name: &str, state: NodeState) -> Node {
        Node {
            id: id.into(),
            name: name.into(),
            addr: format!("10.0.0.{}:4280", id.len()),
            role: NodeRole::Worker,
            availability: Default::default(),
            state,
            labels: BTreeMap::new(),
            resources: Default::default(),
            engine_version: "27.3.1".into(),
            engine: Default::default(),
            updated_at: 0,
        }
    }

    /// A port, through the wire type (whose other fields default).
    fn port(target: u32, published: Option<u32>, protocol: v1::Protocol, mode: v1::PublishMode) -> PortConfig {
        let wire =
            v1::PortConfig { target, published, protocol: protocol.into(), mode: mode.into(), ..Default::default() };
        PortConfig::try_from(wire).expect("a valid port")
    }

    fn template() -> TaskTemplate {
        TaskTemplate {
            image: "web:1".into(),
            networks: vec![
                NetworkAttachment { network: "shop_back".into(), aliases: vec![] },
                NetworkAttachment { network: "outside".into(), aliases: vec![] },
            ],
            ports: vec![
                port(80, Some(8080), v1::Protocol::Tcp, v1::PublishMode::Ingress),
                port(53, Some(5353), v1::Protocol::Udp, v1::PublishMode::Host),
                port(9000, None, v1::Protocol::Tcp, v1::PublishMode::Ingress),
            ],
            ..Default::default()
        }
    }

    fn task(s: &mut ClusterState, id: &str, slot: u64, node: &str, state: TaskState) {
        let addresses = s.net.assign_task(id, node, &["shop_back"]).expect("an address");
        let mut t = Task {
            id: id.into(),
            service_id: "svc1".into(),
            service_name: "shop_web".into(),
            stack: "shop".into(),
            slot,
            node_id: Some(node.into()),
            revision: 1,
            template: template(),
            desired_state: DesiredState::Running,
            status: Default::default(),
            unplaceable: String::new(),
            created_at: 0,
            addresses,
            image: String::new(),
        };
        t.status.state = state;
        s.tasks.insert(t.id.clone(), t);
    }

    /// shop_web: vip mode on shop_back (managed) and `outside` (external);
    /// tasks on n1 (up), n2 (up, node down), n1 (starting).
    fn state(mode: EndpointMode) -> ClusterState {
        let mut s = ClusterState::default();
        s.nodes.insert("n1".into(), node("n1", "node-1", NodeState::Ready));
        s.nodes.insert("n22".into(), node("n22", "node-2", NodeState::Down));
        let back = NetworkSpec { name: "shop_back".into(), ..Default::default() };
        let outside = NetworkSpec { name: "outside".into(), external: true, ..Default::default() };
        let stack = Stack {
            name: "shop".into(),
            volumes: BTreeMap::new(),
            networks: [("back".to_string(), back), ("outside".to_string(), outside)].into(),
            registry_auth: Default::default(),
            created_at: 0,
            updated_at: 0,
        };
        s.stacks.insert("shop".into(), stack);
        let spec = ServiceSpec {
            autoscale: None,
            name: "web".into(),
            mode: ServiceMode::Replicated { replicas: 3 },
            task: template(),
            restart: Default::default(),
            update: Default::default(),
            rollback: Default::default(),
            labels: BTreeMap::new(),
            endpoint_mode: mode,
            depends_on: Vec::new(),
        };
        let mut svc = Service::new("svc1".into(), "shop", spec, 0);
        svc.update = UpdateStatus::default();
        svc.image = stackd_core::model::ImagePin::unrecorded();
        s.services.insert(svc.id.clone(), svc);
        s.net.ensure("shop_back").expect("a subnet");
        if mode == EndpointMode::Vip {
            s.net.set_vips("svc1", &["shop_back"]).expect("a vip");
        }
        task(&mut s, "t1", 1, "n1", TaskState::Running);
        task(&mut s, "t2", 2, "n22", TaskState::Running);
        task(&mut s, "t3", 3, "n1", TaskState::Starting);
        s
    }

    #[test]
    fn a_service_shows_its_vip_and_up_endpoints_per_network() {
        let s = state(EndpointMode::Vip);
        let svc = &s.services["svc1"];
        let nets = service_networks(&s, svc);
        assert_eq!(nets.len(), 2, "{nets:#?}");
        let back = &nets[0];
        assert_eq!(back.network, "shop_back");
        assert!(back.managed);
        let vip: std::net::Ipv4Addr = back.vip.parse().expect("an address");
        assert!(s.net.networks["shop_back"].subnet.contains(vip), "{vip}");
        assert_eq!(back.endpoints.len(), 1, "only the up task on a live node: {:#?}", back.endpoints);
        let e = &back.endpoints[0];
        assert_eq!((e.task_id.as_str(), e.slot, e.node_name.as_str()), ("t1", 1, "node-1"));
        assert_eq!(e.ip, s.tasks.get("t1").expect("t1").addresses["shop_back"].to_string());
        let outside = &nets[1];
        assert_eq!(outside.network, "outside");
        assert!(!outside.managed && outside.vip.is_empty() && outside.endpoints.is_empty());
    }

    #[test]
    fn a_dnsrr_service_has_no_vip() {
        let s = state(EndpointMode::Dnsrr);
        let nets = service_networks(&s, &s.services["svc1"]);
        assert!(nets[0].vip.is_empty());
        assert_eq!(nets[0].endpoints.len(), 1);
    }

    #[test]
    fn published_ports_say_where_they_are_served() {
        let s = state(EndpointMode::Vip);
        let ports = published_ports(&s, &s.services["svc1"]);
        assert_eq!(ports.len(), 2, "an unpublished port is not listed: {ports:#?}");
        let ingress = ports[0].port.as_ref().expect("port");
        assert_eq!((ingress.published, ingress.target), (Some(8080), 80));
        assert!(ports[0].nodes.is_empty(), "ingress: every node");
        let host = ports[1].port.as_ref().expect("port");
        assert_eq!(host.mode, v1::PublishMode::Host as i32);
        assert_eq!(ports[1].nodes, ["node-1"]);
    }

    #[test]
    fn a_node_shows_its_slices_gateway_and_tasks_per_network() {
        let s = state(EndpointMode::Vip);
        let alloc = &s.net.networks["shop_back"];
        let nets = node_networks(&s, "n1");
        assert_eq!(nets.len(), 1, "{nets:#?}");
        let n = &nets[0];
        assert_eq!((n.network.as_str(), n.stack.as_str()), ("shop_back", "shop"));
        assert_eq!(n.subnet, alloc.subnet.to_string());
        assert_eq!(n.vni, alloc.vni);
        assert_eq!(n.tasks, 2, "the running and the starting task");
        let first = alloc.slice(alloc.slices["n1"][0]).expect("a slice");
        assert_eq!(n.slices, [first.to_string()]);
        assert_eq!(n.gateway, alloc.gateway("n1").expect("a gateway").to_string());
        assert!(first.contains(n.gateway.parse().expect("an address")));
        assert!(node_networks(&s, "n9").is_empty(), "a node without slices has no networks");
    }
}
