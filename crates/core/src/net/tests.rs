use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn net(s: &str) -> Subnet {
    s.parse().expect("a subnet")
}

#[test]
fn subnets_parse_print_and_refuse_host_bits() {
    assert_eq!(net("10.192.0.0/12").to_string(), "10.192.0.0/12");
    let err = "10.192.0.1/12".parse::<Subnet>().expect_err("host bits");
    assert!(err.contains("did you mean 10.192.0.0/12"), "{err}");
    assert!("10.0.0.0/33".parse::<Subnet>().is_err());
    assert!("10.0.0.0".parse::<Subnet>().is_err());
    assert!(net("10.192.0.0/12").overlaps(net("10.200.16.0/20")));
    assert!(!net("10.192.0.0/20").overlaps(net("10.192.16.0/20")));
    assert_eq!(net("10.192.0.0/12").child(20, 1), Some(net("10.192.16.0/20")));
    assert_eq!(net("10.192.0.0/12").child(20, 256), None);
}

#[test]
fn pools_must_be_private_and_hold_a_network() {
    assert!(check_pool(DEFAULT_POOL).is_ok());
    assert!(check_pool(net("10.1.0.0/24")).expect_err("too small").contains("smaller than one network"));
    assert!(check_pool(net("8.8.0.0/16")).expect_err("public").contains("not a private range"));
}

#[test]
fn first_network_first_node_first_task() {
    let mut n = Networks::default();
    let a = n.ensure("shop_default").expect("room").clone();
    assert_eq!(a.subnet, net("10.192.0.0/20"));
    assert_eq!(a.vni, VNI_BASE);
    let ips = n.assign_task("t1", "node-a", &["shop_default"]).expect("room");
    assert_eq!(ips["shop_default"], Ipv4Addr::new(10, 192, 0, 2));
    let a = &n.networks["shop_default"];
    assert_eq!(a.gateway("node-a"), Some(Ipv4Addr::new(10, 192, 0, 1)));
    // A second node gets the next slice.
    let ips = n.assign_task("t2", "node-b", &["shop_default"]).expect("room");
    assert_eq!(ips["shop_default"], Ipv4Addr::new(10, 192, 0, 66));
    assert_eq!(n.networks["shop_default"].gateway("node-b"), Some(Ipv4Addr::new(10, 192, 0, 65)));
    assert_eq!(n.networks["shop_default"].node_of(Ipv4Addr::new(10, 192, 0, 66)).map(String::as_str), Some("node-b"));
}

#[test]
fn a_released_address_is_not_handed_out_again_at_once() {
    let mut n = Networks::default();
    n.ensure("s_default").expect("room");
    let first = n.assign_task("t1", "a", &["s_default"]).expect("room");
    n.release_task("t1", &first);
    let second = n.assign_task("t2", "a", &["s_default"]).expect("room");
    assert_ne!(first, second);
}

#[test]
fn a_full_slice_takes_another_and_a_full_network_refuses() {
    let mut n = Networks::default();
    n.ensure("s_default").expect("room");
    let mut count = 0;
    let err = loop {
        match n.assign_task(&format!("t{count}"), "a", &["s_default"]) {
            Ok(_) => count += 1,
            Err(e) => break e,
        }
    };
    // 60 slices of 61 task addresses each.
    assert_eq!(count, NODE_SLICES as usize * 61);
    assert!(matches!(err, AllocError::NetworkFull { .. }), "{err}");
    // All or nothing: a failed assignment on two networks takes nothing on the first.
    n.ensure("s_other").expect("room");
    let before = n.networks["s_other"].clone();
    assert!(n.assign_task("tx", "a", &["s_other", "s_default"]).is_err());
    assert_eq!(n.networks["s_other"], before);
}

#[test]
fn the_pool_runs_out_with_a_clear_error() {
    let mut n = Networks { pool: net("10.10.0.0/19"), ..Networks::default() };
    n.ensure("a").expect("room");
    n.ensure("b").expect("room");
    let err = n.ensure("c").expect_err("full");
    assert!(err.to_string().contains("no subnet left for network c"), "{err}");
    // Collected once unused and undeclared: room again.
    n.collect(|name| name == "a");
    n.ensure("c").expect("room after collect");
}

#[test]
fn vips_come_from_the_last_block_and_follow_the_networks() {
    let mut n = Networks::default();
    n.ensure("s_a").expect("room");
    n.ensure("s_b").expect("room");
    n.set_vips("svc", &["s_a", "s_b"]).expect("room");
    let vips = n.vips_of("svc");
    assert_eq!(vips["s_a"], Ipv4Addr::new(10, 192, 15, 1));
    assert_eq!(vips["s_b"], Ipv4Addr::new(10, 192, 31, 1));
    // Kept on a second call, dropped with the network.
    n.set_vips("svc", &["s_a"]).expect("room");
    assert_eq!(n.vips_of("svc"), BTreeMap::from([("s_a".to_string(), Ipv4Addr::new(10, 192, 15, 1))]));
}

#[derive(Debug, Clone)]
enum Op {
    Assign { task: u8, node: u8, nets: Vec<u8> },
    Release { task: u8 },
    Vips { service: u8, nets: Vec<u8> },
    RemoveNode { node: u8 },
    Collect { keep: Vec<u8> },
}

fn op() -> impl Strategy<Value = Op> {
    let nets = prop::collection::vec(0u8..4, 0..3);
    prop_oneof![
        4 => (0u8..40, 0u8..5, nets.clone()).prop_map(|(task, node, nets)| Op::Assign { task, node, nets }),
        2 => (0u8..40).prop_map(|task| Op::Release { task }),
        1 => (0u8..6, nets.clone()).prop_map(|(service, nets)| Op::Vips { service, nets }),
        1 => (0u8..5).prop_map(|node| Op::RemoveNode { node }),
        1 => nets.prop_map(|keep| Op::Collect { keep }),
    ]
}

fn check_invariants(n: &Networks, held: &BTreeMap<String, (String, BTreeMap<String, Ipv4Addr>)>) {
    let subnets: Vec<Subnet> = n.networks.values().map(|a| a.subnet).collect();
    for (i, a) in subnets.iter().enumerate() {
        assert!(n.pool.contains(a.addr), "{a} outside the pool");
        for b in &subnets[i + 1..] {
            assert!(!a.overlaps(*b), "{a} overlaps {b}");
        }
    }
    let vnis: BTreeSet<u32> = n.networks.values().map(|a| a.vni).collect();
    assert_eq!(vnis.len(), n.networks.len(), "VXLAN ids are unique");
    for (name, a) in &n.networks {
        let mut owners = BTreeMap::new();
        for (node, slices) in &a.slices {
            for s in slices {
                assert!(*s < NODE_SLICES, "{name}: slice {s} is in the VIP block");
                assert!(owners.insert(*s, node.clone()).is_none(), "{name}: slice {s} has two nodes");
            }
        }
        let block = a.vip_block().expect("a block");
        let vips: BTreeSet<Ipv4Addr> = a.vips.values().copied().collect();
        assert_eq!(vips.len(), a.vips.len(), "{name}: a VIP twice");
        for ip in &vips {
            assert!(block.contains(*ip) && a.subnet.contains(*ip), "{name}: VIP {ip} outside its block");
            assert!(a.node_of(*ip).is_none(), "{name}: VIP {ip} in a node's slice");
        }
        for (ip, task) in &a.tasks {
            let (node, addrs) = held.get(task).unwrap_or_else(|| panic!("{name}: {ip} held by released task {task}"));
            assert_eq!(addrs.get(name), Some(ip), "{name}: {ip} is not {task}'s");
            assert_eq!(a.node_of(*ip), Some(node), "{name}: {ip} is not in a slice of {node}");
            for gw in a.slices.keys().filter_map(|nd| a.gateway(nd)) {
                assert_ne!(*ip, gw, "{name}: a task has a gateway's address");
            }
        }
    }
    // Every held address is recorded (unless its network was collected, which
    // happens only when nothing holds it: so never).
    for (task, (_, addrs)) in held {
        for (name, ip) in addrs {
            assert_eq!(n.networks.get(name).and_then(|a| a.tasks.get(ip)), Some(task), "{task}'s {ip} on {name} lost");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the sequence, no address, slice, subnet or VIP is given
    /// twice, every address lies in its node's slice, and nothing held is lost.
    #[test]
    fn allocations_never_overlap(ops in prop::collection::vec(op(), 1..120)) {
        let mut n = Networks { pool: net("10.10.0.0/18"), ..Networks::default() };
        let names = ["s_a", "s_b", "s_c", "s_d"];
        let mut held: BTreeMap<String, (String, BTreeMap<String, Ipv4Addr>)> = BTreeMap::new();
        let mut removed_nodes = BTreeSet::new();
        for op in ops {
            match op {
                Op::Assign { task, node, nets } => {
                    let task = format!("t{task}");
                    let node = format!("n{node}");
                    if held.contains_key(&task) || removed_nodes.contains(&node) {
                        continue;
                    }
                    let nets: Vec<&str> = nets.iter().map(|i| names[*i as usize]).collect();
                    for name in &nets {
                        let _ = n.ensure(name);
                    }
                    if let Ok(addrs) = n.assign_task(&task, &node, &nets) {
                        held.insert(task, (node, addrs));
                    }
                }
                Op::Release { task } => {
                    if let Some((_, addrs)) = held.remove(&format!("t{task}")) {
                        n.release_task(&format!("t{task}"), &addrs);
                    }
                }
                Op::Vips { service, nets } => {
                    let nets: Vec<&str> = nets.iter().map(|i| names[*i as usize]).collect();
                    for name in &nets {
                        let _ = n.ensure(name);
                    }
                    let _ = n.set_vips(&format!("s{service}"), &nets);
                }
                Op::RemoveNode { node } => {
                    let node = format!("n{node}");
                    let gone: Vec<String> = held.iter().filter(|(_, (nd, _))| *nd == node).map(|(t, _)| t.clone()).collect();
                    for t in gone {
                        if let Some((_, addrs)) = held.remove(&t) {
                            n.release_task(&t, &addrs);
                        }
                    }
                    n.release_node(&node);
                    removed_nodes.insert(node);
                }
                Op::Collect { keep } => {
                    let keep: Vec<&str> = keep.iter().map(|i| names[*i as usize]).collect();
                    n.collect(|name| keep.contains(&name));
                }
            }
            check_invariants(&n, &held);
        }
    }
}

mod views {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use crate::command::{Command, TaskStatusUpdate};
    use crate::model::*;
    use crate::net::{NodeView, node_view};
    use crate::orchestrator::orchestrate;
    use crate::scheduler::{Scheduler, SpreadScheduler};
    use crate::state::ClusterState;

    fn node(k: u8) -> Node {
        Node {
            id: format!("n{k}"),
            name: format!("n{k}"),
            addr: format!("10.9.0.{k}:4280"),
            role: NodeRole::Worker,
            availability: Availability::Active,
            state: NodeState::Ready,
            labels: BTreeMap::new(),
            resources: Resources::default(),
            engine_version: "20.10".into(),
            engine: Default::default(),
            updated_at: 0,
        }
    }

    fn apply(s: &mut ClusterState, cmd: Command) {
        let index = s.tasks.len() as u64 + 1000 + cmd.at();
        let r = s.apply(index, &cmd);
        assert_eq!(r.rejected, None, "{cmd:?}");
        for pin in s.keep_tags("built on the node", cmd.at()) {
            s.apply(index, &pin);
        }
    }

    /// Two nodes, one stack `shop` with a `web` service (2 replicas) on
    /// network `shop_default`, both running.
    fn cluster() -> ClusterState {
        cluster_with(Vec::new())
    }

    /// [`cluster`], `web` publishing `ports`.
    fn cluster_with(ports: Vec<PortConfig>) -> ClusterState {
        let mut s = ClusterState::default();
        apply(&mut s, Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: None });
        apply(&mut s, Command::UpsertNode { node: node(1), at: 2 });
        apply(&mut s, Command::UpsertNode { node: node(2), at: 3 });
        let web = ServiceSpec::replicated(
            "web",
            2,
            TaskTemplate {
                image: "web:1".into(),
                networks: vec![NetworkAttachment { network: "shop_default".into(), aliases: vec!["www".into()] }],
                ports,
                ..Default::default()
            },
        );
        let spec = StackSpec {
            name: "shop".into(),
            services: BTreeMap::from([("web".to_string(), web)]),
            networks: BTreeMap::from([(
                "default".to_string(),
                NetworkSpec { name: "shop_default".into(), ..Default::default() },
            )]),
            ..Default::default()
        };
        apply(&mut s, Command::PutStack { spec, prune: false, registry_auth: None, at: 10 });
        let plan = orchestrate(&s, 11).plan;
        apply(&mut s, Command::ApplyPlan { plan, at: 11 });
        let decisions = SpreadScheduler.schedule(&s);
        apply(&mut s, Command::Schedule { decisions, at: 12 });
        report_all(&mut s, TaskState::Running, "", 13);
        s
    }

    fn report_all(s: &mut ClusterState, state: TaskState, health: &str, at: u64) {
        let updates = s
            .tasks
            .values()
            .map(|t| TaskStatusUpdate {
                task_id: t.id.clone(),
                node_id: t.node_id.clone().expect("placed"),
                status: TaskStatus { state, timestamp: at, health: health.into(), ..Default::default() },
            })
            .collect();
        apply(s, Command::UpdateTaskStatus { updates, at });
    }

    fn web_endpoints(v: &NodeView) -> Vec<Ipv4Addr> {
        v.services.iter().find(|s| s.name == "web").map(|s| s.networks[0].endpoints.clone()).unwrap_or_default()
    }

    #[test]
    fn each_node_sees_its_gateway_the_other_nodes_containers_and_the_service() {
        let s = cluster();
        let (a, b) = (node_view(&s, "n1"), node_view(&s, "n2"));
        assert_eq!(a.networks.len(), 1);
        let (na, nb) = (&a.networks[0], &b.networks[0]);
        assert_eq!((na.name.as_str(), na.stack.as_str(), na.key.as_str()), ("shop_default", "shop", "default"));
        assert_eq!(na.subnet, nb.subnet);
        assert_ne!(na.gateway, nb.gateway);
        // Each sees the other's one container, at the other's address.
        assert_eq!(na.peers.len(), 1);
        assert_eq!(na.peers[0].node, Ipv4Addr::new(10, 9, 0, 2));
        let on_b: Vec<Ipv4Addr> = s
            .tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some("n2"))
            .map(|t| t.addresses["shop_default"])
            .collect();
        assert_eq!(vec![na.peers[0].ip], on_b);
        let svc = &a.services[0];
        assert_eq!(svc.networks[0].aliases, vec!["www".to_string()]);
        assert!(svc.networks[0].vip.is_some_and(|ip| na.subnet.contains(ip)));
        assert_eq!(web_endpoints(&a).len(), 2);
        assert_eq!(web_endpoints(&a), web_endpoints(&b));
    }

    #[test]
    fn unhealthy_tasks_and_tasks_of_a_down_node_are_no_endpoints() {
        let mut s = cluster();
        report_all(&mut s, TaskState::Running, "unhealthy", 20);
        assert!(web_endpoints(&node_view(&s, "n1")).is_empty());
        report_all(&mut s, TaskState::Running, "healthy", 21);
        assert_eq!(web_endpoints(&node_view(&s, "n1")).len(), 2);
        apply(&mut s, Command::SetNodeState { id: "n2".into(), state: NodeState::Down, at: 22 });
        let on_a: Vec<Ipv4Addr> = s
            .tasks
            .values()
            .filter(|t| t.node_id.as_deref() == Some("n1"))
            .map(|t| t.addresses["shop_default"])
            .collect();
        assert_eq!(web_endpoints(&node_view(&s, "n1")), on_a);
    }

    #[test]
    fn a_task_leaving_the_endpoints_stays_reachable_through_the_mesh_until_it_ends() {
        let port = PortConfig {
            target: 8080,
            published: Some(18080),
            protocol: Protocol::Tcp,
            mode: PublishMode::Ingress,
            host_ip: String::new(),
            proxy_protocol: false,
        };
        let mut s = cluster_with(vec![port]);
        let mesh = |s: &ClusterState| {
            let v = node_view(s, "n1");
            let p = &v.published[0];
            let ips = |peers: &[crate::net::Peer]| peers.iter().map(|p| p.ip).collect::<Vec<_>>();
            (ips(&p.endpoints), ips(&p.reachable))
        };
        let (endpoints, reachable) = mesh(&s);
        assert_eq!((endpoints.len(), &reachable), (2, &endpoints));
        // One task is shut down (a rollout replaced it): no new connection
        // goes to it, its established ones still do until it has ended.
        let id = s.tasks.keys().next().cloned().expect("a task");
        let ip = s.tasks[&id].addresses["shop_default"];
        let plan =
            crate::command::Plan { set_desired: vec![(id.clone(), DesiredState::Shutdown)], ..Default::default() };
        apply(&mut s, Command::ApplyPlan { plan, at: 20 });
        let (endpoints, reachable) = mesh(&s);
        assert!(!endpoints.contains(&ip) && endpoints.len() == 1, "{endpoints:?}");
        assert!(reachable.contains(&ip) && reachable.len() == 2, "{reachable:?}");
        let node_id = s.tasks[&id].node_id.clone().expect("placed");
        let status = TaskStatus { state: TaskState::Shutdown, timestamp: 21, ..Default::default() };
        let updates = vec![TaskStatusUpdate { task_id: id, node_id, status }];
        apply(&mut s, Command::UpdateTaskStatus { updates, at: 21 });
        let (_, reachable) = mesh(&s);
        assert!(!reachable.contains(&ip) && reachable.len() == 1, "ended, it is no longer reached: {reachable:?}");
        // A task that is not up yet is reachable before it is an endpoint:
        // its route is in place when the first connection is sent to it.
        report_all(&mut s, TaskState::Running, "starting", 22);
        let (endpoints, reachable) = mesh(&s);
        assert!(endpoints.is_empty() && reachable.len() == 1, "{endpoints:?} {reachable:?}");
    }

    #[test]
    fn a_removed_stack_leaves_no_network_and_no_address() {
        let mut s = cluster();
        apply(&mut s, Command::RemoveStack { name: "shop".into(), at: 30 });
        assert!(node_view(&s, "n1").networks.is_empty());
        assert!(s.net.networks.is_empty(), "{:?}", s.net.networks);
    }
}

mod mesh_ports {
    use std::collections::BTreeMap;

    use crate::command::Command;
    use crate::model::*;
    use crate::state::ClusterState;

    fn stack(name: &str, port: u16, mode: PublishMode) -> StackSpec {
        let web = ServiceSpec {
            autoscale: None,
            name: "web".into(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: TaskTemplate {
                image: "web:1".into(),
                ports: vec![PortConfig {
                    target: 8080,
                    published: Some(port),
                    protocol: Protocol::Tcp,
                    mode,
                    host_ip: String::new(),
                    proxy_protocol: false,
                }],
                ..Default::default()
            },
            restart: RestartPolicy::default(),
            update: UpdateConfig::default(),
            rollback: UpdateConfig::rollback_default(),
            labels: BTreeMap::new(),
            endpoint_mode: EndpointMode::Vip,
            depends_on: Vec::new(),
        };
        StackSpec { name: name.into(), services: BTreeMap::from([("web".to_string(), web)]), ..Default::default() }
    }

    #[test]
    fn a_mesh_port_belongs_to_one_service() {
        let mut s = ClusterState::default();
        s.apply(1, &Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: None });
        let put = |s: &mut ClusterState, i, spec| {
            s.apply(i, &Command::PutStack { spec, prune: false, registry_auth: None, at: i })
        };
        assert_eq!(put(&mut s, 2, stack("a", 18080, PublishMode::Ingress)).rejected, None);
        // The same stack again keeps its own port.
        assert_eq!(put(&mut s, 3, stack("a", 18080, PublishMode::Ingress)).rejected, None);
        let before = s.clone();
        for mode in [PublishMode::Ingress, PublishMode::Host] {
            let r = put(&mut s, 4, stack("b", 18080, mode));
            let why = r.rejected.unwrap_or_default();
            assert!(why.contains("port 18080/tcp of b_web is already published by a_web"), "{mode:?}: {why}");
            assert_eq!(s, before, "a refused deploy changes nothing");
        }
        assert_eq!(put(&mut s, 5, stack("b", 18081, PublishMode::Ingress)).rejected, None);
        // Host-mode ports may repeat: they are bound per node.
        assert_eq!(put(&mut s, 6, stack("c", 19000, PublishMode::Host)).rejected, None);
        assert_eq!(put(&mut s, 7, stack("d", 19000, PublishMode::Host)).rejected, None);
    }
}
