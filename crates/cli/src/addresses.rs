//! The cluster's networks as `service inspect` and `node inspect` show
//! them: a service's virtual addresses, endpoints and published ports; a
//! node's slices, gateways and VXLAN ids. Rows are data (JSON and YAML
//! print them as they are); the `*_lines` functions draw them for people.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;
use stackd_core::model::{self, EndpointMode, PortConfig, PublishMode};
use stackd_proto::v1;

use crate::args::{Global, Output};
use crate::client::{connect, status};
use crate::output::{age, name as serde_name, print_document};

/// A service on one of its networks.
#[derive(Clone, Debug, Serialize)]
pub struct NetworkRow {
    /// The network's engine name.
    network: String,
    /// Whether stackd allocates its addresses (false: external, another driver).
    managed: bool,
    /// The service's virtual address there; `None` for `dnsrr` or on a
    /// network stackd does not manage.
    vip: Option<String>,
    /// Its up tasks at their address on the network.
    endpoints: Vec<EndpointRow>,
}

/// A task of a service at its address on one network.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointRow {
    /// `<service>.<slot>` (global services: `<service>.<node-id-prefix>`), as `ps` names it.
    name: String,
    task_id: String,
    ip: String,
    /// The node's name.
    node: String,
    node_id: String,
}

/// A published port and where it is served.
#[derive(Clone, Debug, Serialize)]
pub struct PublishedRow {
    /// `published`, `target`, `protocol`, `mode`, `host_ip`, as `service ls` gives ports.
    #[serde(flatten)]
    port: PortConfig,
    /// `mode: host`: the nodes that serve it; empty for `ingress` (every node).
    nodes: Vec<String>,
}

/// The networks of `service inspect`, from the wire.
pub fn network_rows(service: &str, networks: Vec<v1::ServiceNetwork>) -> Vec<NetworkRow> {
    networks
        .into_iter()
        .map(|n| NetworkRow {
            network: n.network,
            managed: n.managed,
            vip: (!n.vip.is_empty()).then_some(n.vip),
            endpoints: n
                .endpoints
                .into_iter()
                .map(|e| {
                    let slot = if e.slot == 0 { model::prefix(&e.node_id, 12).to_string() } else { e.slot.to_string() };
                    EndpointRow {
                        name: format!("{service}.{slot}"),
                        task_id: e.task_id,
                        ip: e.ip,
                        node: if e.node_name.is_empty() { e.node_id.clone() } else { e.node_name },
                        node_id: e.node_id,
                    }
                })
                .collect(),
        })
        .collect()
}

/// The published ports of `service inspect`, from the wire.
pub fn published_rows(published: Vec<v1::PublishedPort>) -> Result<Vec<PublishedRow>> {
    published
        .into_iter()
        .map(|p| {
            let port = PortConfig::try_from(p.port.context("manager sent a published port without its port")?)?;
            Ok(PublishedRow { port, nodes: p.nodes })
        })
        .collect()
}

/// The `Networks:` section of `service inspect`: each network with the
/// service's virtual address (or `dnsrr`), then its endpoints.
pub fn network_lines(mode: EndpointMode, rows: &[NetworkRow]) -> Vec<String> {
    if rows.is_empty() {
        return vec!["Networks:  none (Docker's default bridge, or network_mode)".into()];
    }
    let width = rows.iter().map(|r| r.network.len()).max().unwrap_or(0);
    let mut lines = vec!["Networks:".to_string()];
    for r in rows {
        let address = match (&r.vip, r.managed, mode) {
            (Some(vip), _, _) => format!("VIP {vip}"),
            (None, false, _) => "not managed by stackd (external): no virtual address".into(),
            (None, true, EndpointMode::Dnsrr) => "dnsrr: the name answers the tasks' addresses".into(),
            (None, true, EndpointMode::Vip) => "VIP not allocated yet".into(),
        };
        lines.push(format!("  {:width$}  {address}", r.network));
        if r.managed && r.endpoints.is_empty() {
            lines.push("    no endpoint: no task is up".into());
        }
        let name_w = r.endpoints.iter().map(|e| e.name.len()).max().unwrap_or(0);
        let ip_w = r.endpoints.iter().map(|e| e.ip.len()).max().unwrap_or(0);
        for e in &r.endpoints {
            lines.push(format!("    {:name_w$}  {:ip_w$}  on {}", e.name, e.ip, e.node));
        }
    }
    lines
}

/// The `Ports:` section of `service inspect`: `8080/tcp -> 80  ingress (every node)`.
pub fn published_lines(rows: &[PublishedRow]) -> Vec<String> {
    if rows.is_empty() {
        return vec!["Ports:     none published".into()];
    }
    let texts: Vec<String> = rows
        .iter()
        .map(|r| {
            let published = r.port.published.map_or_else(|| "-".to_string(), |p| p.to_string());
            format!("{published}/{} -> {}", r.port.protocol.as_str(), r.port.target)
        })
        .collect();
    let width = texts.iter().map(String::len).max().unwrap_or(0);
    let mut lines = vec!["Ports:".to_string()];
    for (text, r) in texts.iter().zip(rows) {
        let served = match r.port.mode {
            PublishMode::Ingress => "ingress (routing mesh: every node)".to_string(),
            PublishMode::Host if r.nodes.is_empty() => "host (no task is up)".to_string(),
            PublishMode::Host => format!("host (on {})", r.nodes.join(", ")),
        };
        lines.push(format!("  {text:width$}  {served}"));
    }
    lines
}

/// A node's share of one network.
#[derive(Clone, Debug, Serialize)]
pub struct NodeNetworkRow {
    /// The network's engine name.
    network: String,
    /// The stack that declares it (empty when none does any more).
    stack: String,
    /// The network's subnet across the cluster.
    subnet: String,
    /// The node's slices of it (CIDRs).
    slices: Vec<String>,
    /// The node's gateway on it.
    gateway: String,
    /// The network's VXLAN id.
    vni: u32,
    /// How many of its addresses the node's tasks hold.
    tasks: u64,
}

impl From<v1::NodeNetwork> for NodeNetworkRow {
    fn from(n: v1::NodeNetwork) -> Self {
        NodeNetworkRow {
            network: n.network,
            stack: n.stack,
            subnet: n.subnet,
            slices: n.slices,
            gateway: n.gateway,
            vni: n.vni,
            tasks: n.tasks,
        }
    }
}

/// What `node inspect --output json` prints.
#[derive(Debug, Serialize)]
pub struct NodeDetail {
    /// `id`, `name`, `addr`, `role`, `availability`, `state`, `labels`,
    /// `resources`, `engine_version`, `engine` (`os`, `os_name`, `arch`,
    /// `kernel_version`, `labels`: what the engine reported, left out until
    /// it did), `updated_at`.
    #[serde(flatten)]
    node: model::Node,
    /// What its tasks reserve of `resources` (the scheduler's count).
    reserved: model::Resources,
    /// Milliseconds since its agent last called the leader; `null` when
    /// not known (`heartbeat` says why).
    heartbeat_age_ms: Option<u64>,
    /// The same for people: `1.2s ago`, `none since this leader was
    /// elected`, `unknown (ask the leader)`.
    heartbeat: String,
    /// Managers only: whether it leads.
    #[serde(skip_serializing_if = "Option::is_none")]
    leader: Option<bool>,
    /// Managers only: whether the leader hears from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    reachable: Option<bool>,
    /// The networks it holds a slice of.
    networks: Vec<NodeNetworkRow>,
    /// Its tasks that are wanted or still up, by state (`running`: 3);
    /// `stackctl node ps` lists them.
    tasks: BTreeMap<String, u64>,
}

/// `node inspect`'s document, from the wire.
pub fn node_detail(r: v1::InspectNodeResponse) -> Result<NodeDetail> {
    let node = model::Node::try_from(r.node.context("manager sent no node")?)?;
    let manager = node.role == model::NodeRole::Manager;
    let heartbeat = match (r.from_leader, r.heartbeat_age_ms) {
        (false, _) => "unknown (ask the leader: only it hears the agents)".to_string(),
        (true, None) => "none since this leader was elected".to_string(),
        (true, Some(ms)) if ms < 60_000 => format!("{}s ago", trim_float(ms as f64 / 1000.0)),
        (true, Some(ms)) => age(crate::output::now_ms().saturating_sub(ms).max(1)),
    };
    let reserved = match r.reserved {
        Some(reserved) => model::Resources::try_from(reserved)?,
        None => model::Resources::default(),
    };
    Ok(NodeDetail {
        reserved,
        heartbeat_age_ms: r.heartbeat_age_ms.filter(|_| r.from_leader),
        heartbeat,
        leader: manager.then(|| r.manager.as_ref().is_some_and(|m| m.leader)),
        reachable: manager.then(|| r.manager.as_ref().is_some_and(|m| m.reachable)),
        node,
        networks: r.networks.into_iter().map(NodeNetworkRow::from).collect(),
        tasks: BTreeMap::new(),
    })
}

/// `zone=a, disk=ssd`, or `-`.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// `linux x86_64, Debian GNU/Linux 12 (bookworm), kernel 6.1.0-18-amd64`,
/// or `-` before the agent reported.
fn platform_text(e: &model::EngineDescription) -> String {
    let head = [e.os.as_str(), e.arch.as_str()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    let kernel = (!e.kernel_version.is_empty()).then(|| format!("kernel {}", e.kernel_version));
    let parts: Vec<String> =
        [Some(head), Some(e.os_name.clone()), kernel].into_iter().flatten().filter(|s| !s.is_empty()).collect();
    if parts.is_empty() { "- (not reported yet)".into() } else { parts.join(", ") }
}

/// `4 CPUs, 7.8 GiB memory, gpu=2` (`512 MiB memory` under 1 GiB).
fn resources_text(r: &model::Resources) -> String {
    let cpus = r.nano_cpus as f64 / 1e9;
    let mut parts = vec![
        format!("{} CPU{}", trim_float(cpus), if cpus == 1.0 { "" } else { "s" }),
        if r.memory_bytes > 0 && r.memory_bytes < 1 << 30 {
            format!("{} MiB memory", trim_float(r.memory_bytes as f64 / f64::from(1u32 << 20)))
        } else {
            format!("{} GiB memory", trim_float(r.memory_bytes as f64 / f64::from(1u32 << 30)))
        },
    ];
    parts.extend(r.generic.iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(", ")
}

/// A number with at most one decimal, without a trailing `.0`.
fn trim_float(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// `2 running, 1 starting`, or `none`.
fn tasks_text(tasks: &BTreeMap<String, u64>) -> String {
    if tasks.is_empty() {
        return "none".into();
    }
    tasks.iter().map(|(state, n)| format!("{n} {state}")).collect::<Vec<_>>().join(", ")
}

/// `node inspect` for people.
pub fn node_lines(d: &NodeDetail) -> Vec<String> {
    let n = &d.node;
    let mut role = serde_name(&n.role);
    if d.leader.is_some() || d.reachable.is_some() {
        let leads = if d.leader == Some(true) { "leader" } else { "follower" };
        let heard = if d.reachable == Some(true) { "reachable" } else { "not reachable" };
        role = format!("{role} ({leads}, {heard})");
    }
    let labels = labels_text(&n.labels);
    let mut lines = vec![
        format!("ID:            {}", n.id),
        format!("Name:          {}", n.name),
        format!("Role:          {role}"),
        format!("Availability:  {}", serde_name(&n.availability)),
        format!("State:         {}", serde_name(&n.state)),
        format!("Address:       {}", if n.addr.is_empty() { "-" } else { &n.addr }),
        format!("Engine:        {}", if n.engine_version.is_empty() { "-" } else { &n.engine_version }),
        format!("Platform:      {}", platform_text(&n.engine)),
        format!("Engine labels: {}", labels_text(&n.engine.labels)),
        format!("Resources:     {}", resources_text(&n.resources)),
        format!("Reserved:      {}", resources_text(&d.reserved)),
        format!("Labels:        {labels}"),
        format!("Tasks:         {}", tasks_text(&d.tasks)),
        format!("Heartbeat:     {}", d.heartbeat),
        format!("Updated:       {}", age(n.updated_at)),
    ];
    if d.networks.is_empty() {
        lines.push("Networks:      none (no task of a stack network has run here)".into());
        return lines;
    }
    lines.push("Networks:".into());
    let header = ["NETWORK", "STACK", "SUBNET", "SLICES", "GATEWAY", "VXLAN", "TASKS"];
    let cells: Vec<[String; 7]> = d
        .networks
        .iter()
        .map(|r| {
            [
                r.network.clone(),
                if r.stack.is_empty() { "-".into() } else { r.stack.clone() },
                r.subnet.clone(),
                r.slices.join(","),
                if r.gateway.is_empty() { "-".into() } else { r.gateway.clone() },
                r.vni.to_string(),
                r.tasks.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cols: Vec<&str>| {
        let text: Vec<String> = cols.iter().zip(widths).map(|(c, w)| format!("{c:w$}")).collect();
        format!("  {}", text.join("  ").trim_end())
    };
    lines.push(line(header.to_vec()));
    for row in &cells {
        lines.push(line(row.iter().map(String::as_str).collect()));
    }
    lines
}

/// `stackctl node inspect NODE`.
pub async fn node_inspect(g: &Global, node: &str) -> Result<i32> {
    let mut c = connect(g).await?;
    let req = v1::InspectNodeRequest { node: node.to_string(), stale: g.stale };
    let resp = c
        .read(|mut c| {
            let req = req.clone();
            async move { c.inspect_node(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut detail = node_detail(resp)?;
    let req = v1::ListTasksRequest { node: detail.node.id.clone(), stale: g.stale, ..Default::default() };
    let (tasks, _) = crate::inspect::fetch_tasks(&mut c, req).await?;
    for t in tasks {
        if t.desired_state == model::DesiredState::Running || !t.status.state.is_terminal() {
            *detail.tasks.entry(serde_name(&t.status.state)).or_default() += 1;
        }
    }
    match g.output {
        Output::Json | Output::Yaml => print_document(&detail, g.output)?,
        Output::Table => {
            for l in node_lines(&detail) {
                out!("{l}");
            }
        }
    }
    Ok(crate::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn wire_networks() -> Vec<v1::ServiceNetwork> {
        let endpoint = |task: &str, slot, ip: &str, node: &str| v1::ServiceEndpoint {
            task_id: task.into(),
            slot,
            ip: ip.into(),
            node_id: format!("id-{node}"),
            node_name: node.into(),
        };
        vec![
            v1::ServiceNetwork {
                network: "shop_back".into(),
                managed: true,
                vip: "10.192.15.1".into(),
                endpoints: vec![endpoint("t1", 1, "10.192.0.2", "node-1"), endpoint("t2", 2, "10.192.0.66", "node-2")],
            },
            v1::ServiceNetwork { network: "outside".into(), managed: false, vip: String::new(), endpoints: vec![] },
        ]
    }

    #[test]
    fn service_networks_show_vips_and_endpoints() {
        let rows = network_rows("shop_web", wire_networks());
        let json = serde_json::to_value(&rows).expect("json");
        assert_eq!(json[0]["network"], "shop_back");
        assert_eq!(json[0]["vip"], "10.192.15.1");
        assert_eq!(json[0]["endpoints"][1]["name"], "shop_web.2");
        assert_eq!(json[0]["endpoints"][1]["ip"], "10.192.0.66");
        assert_eq!(json[0]["endpoints"][1]["node"], "node-2");
        assert_eq!(json[1]["vip"], serde_json::Value::Null);
        assert_eq!(json[1]["managed"], false);

        let text = network_lines(EndpointMode::Vip, &rows).join("\n");
        assert!(text.contains("shop_back  VIP 10.192.15.1"), "{text}");
        assert!(text.contains("shop_web.1  10.192.0.2   on node-1"), "{text}");
        assert!(text.contains("outside    not managed by stackd"), "{text}");

        let mut dnsrr = network_rows("shop_web", wire_networks());
        dnsrr[0].vip = None;
        let text = network_lines(EndpointMode::Dnsrr, &dnsrr).join("\n");
        assert!(text.contains("shop_back  dnsrr"), "{text}");
        assert!(network_lines(EndpointMode::Vip, &[])[0].contains("none"));
    }

    #[test]
    fn a_global_tasks_endpoint_is_named_by_its_node() {
        let mut nets = wire_networks();
        nets[0].endpoints[0].slot = 0;
        nets[0].endpoints[0].node_id = "abcdef0123456789".into();
        let rows = network_rows("shop_agent", nets);
        assert_eq!(rows[0].endpoints[0].name, "shop_agent.abcdef012345");
    }

    #[test]
    fn published_ports_say_ingress_or_host_and_where() {
        let port = |published, target, protocol: v1::Protocol, mode: v1::PublishMode| v1::PortConfig {
            target,
            published: Some(published),
            protocol: protocol.into(),
            mode: mode.into(),
            ..Default::default()
        };
        let wire = vec![
            v1::PublishedPort {
                port: Some(port(8080, 80, v1::Protocol::Tcp, v1::PublishMode::Ingress)),
                nodes: vec![],
            },
            v1::PublishedPort {
                port: Some(port(5353, 53, v1::Protocol::Udp, v1::PublishMode::Host)),
                nodes: vec!["node-1".into(), "node-2".into()],
            },
        ];
        let rows = published_rows(wire).expect("rows");
        let json = serde_json::to_value(&rows).expect("json");
        assert_eq!(json[0]["published"], 8080);
        assert_eq!(json[0]["target"], 80);
        assert_eq!(json[0]["protocol"], "tcp");
        assert_eq!(json[0]["mode"], "ingress");
        assert_eq!(json[1]["mode"], "host");
        assert_eq!(json[1]["nodes"], serde_json::json!(["node-1", "node-2"]));
        let text = published_lines(&rows).join("\n");
        assert!(text.contains("8080/tcp -> 80  ingress (routing mesh: every node)"), "{text}");
        assert!(text.contains("5353/udp -> 53  host (on node-1, node-2)"), "{text}");
        assert!(published_rows(vec![v1::PublishedPort { port: None, nodes: vec![] }]).is_err());
    }

    fn wire_node(role: v1::NodeRole) -> v1::InspectNodeResponse {
        let node = model::Node {
            id: "m1".into(),
            name: "node-1".into(),
            addr: "10.0.0.1:4280".into(),
            role: model::NodeRole::try_from(role).expect("a role"),
            availability: model::Availability::Active,
            state: model::NodeState::Ready,
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            resources: model::Resources {
                nano_cpus: 4_000_000_000,
                memory_bytes: 8 << 30,
                generic: BTreeMap::from([("gpu".to_string(), 2)]),
            },
            engine_version: "27.3.1".into(),
            engine: model::EngineDescription {
                os: "linux".into(),
                os_name: "Debian GNU/Linux 12 (bookworm)".into(),
                arch: "x86_64".into(),
                kernel_version: "6.1.0-18-amd64".into(),
                labels: BTreeMap::from([("storage".to_string(), "ssd".to_string())]),
            },
            updated_at: 0,
        };
        v1::InspectNodeResponse {
            node: Some(v1::Node::from(&node)),
            manager: Some(v1::ManagerStatus {
                node_id: "m1".into(),
                addr: "10.0.0.1:4280".into(),
                leader: true,
                reachable: true,
                voter: true,
                matched: 7,
            }),
            networks: vec![v1::NodeNetwork {
                network: "shop_back".into(),
                stack: "shop".into(),
                subnet: "10.192.0.0/20".into(),
                slices: vec!["10.192.0.0/26".into(), "10.192.0.128/26".into()],
                gateway: "10.192.0.1".into(),
                vni: 0x10_0000,
                tasks: 2,
            }],
            reserved: Some(v1::Resources { nano_cpus: 500_000_000, memory_bytes: 16 << 20, ..Default::default() }),
            from_leader: true,
            heartbeat_age_ms: Some(1_200),
        }
    }

    #[test]
    fn node_inspect_shows_the_node_and_its_networks() {
        let d = node_detail(wire_node(v1::NodeRole::Manager)).expect("detail");
        let json = serde_json::to_value(&d).expect("json");
        assert_eq!(json["id"], "m1");
        assert_eq!(json["addr"], "10.0.0.1:4280");
        assert_eq!(json["role"], "manager");
        assert_eq!(json["leader"], true);
        assert_eq!(json["resources"]["nano_cpus"], 4_000_000_000u64);
        assert_eq!(json["labels"]["zone"], "a");
        let net = &json["networks"][0];
        assert_eq!(net["network"], "shop_back");
        assert_eq!(net["gateway"], "10.192.0.1");
        assert_eq!(net["slices"][1], "10.192.0.128/26");
        assert_eq!(net["vni"], 0x10_0000);
        assert_eq!(net["tasks"], 2);

        assert_eq!(json["engine"]["os"], "linux");
        assert_eq!(json["engine"]["arch"], "x86_64");
        assert_eq!(json["engine"]["kernel_version"], "6.1.0-18-amd64");
        assert_eq!(json["engine"]["labels"]["storage"], "ssd");
        assert_eq!(json["reserved"]["memory_bytes"], 16u64 << 20);
        assert_eq!(json["heartbeat_age_ms"], 1_200);
        assert_eq!(json["heartbeat"], "1.2s ago");

        let text = node_lines(&d).join("\n");
        assert!(text.contains("Role:          manager (leader, reachable)"), "{text}");
        assert!(text.contains("Resources:     4 CPUs, 8 GiB memory, gpu=2"), "{text}");
        assert!(text.contains("Reserved:      0.5 CPUs, 16 MiB memory\n"), "{text}");
        assert!(
            text.contains("Platform:      linux x86_64, Debian GNU/Linux 12 (bookworm), kernel 6.1.0-18-amd64\n"),
            "{text}"
        );
        assert!(text.contains("Engine labels: storage=ssd\n"), "{text}");
        assert!(text.contains("Heartbeat:     1.2s ago\n"), "{text}");
        assert!(text.contains("NETWORK    STACK  SUBNET"), "{text}");
        assert!(
            text.contains("shop_back  shop   10.192.0.0/20  10.192.0.0/26,10.192.0.128/26  10.192.0.1  1048576  2"),
            "{text}"
        );
    }

    #[test]
    fn a_worker_has_no_raft_fields_and_may_have_no_networks() {
        let mut wire = wire_node(v1::NodeRole::Worker);
        wire.manager = None;
        wire.networks.clear();
        let d = node_detail(wire).expect("detail");
        let json = serde_json::to_value(&d).expect("json");
        assert!(json.get("leader").is_none() && json.get("reachable").is_none(), "{json}");
        assert_eq!(json["networks"], serde_json::json!([]));
        let text = node_lines(&d).join("\n");
        assert!(text.contains("Role:          worker\n"), "{text}");
        assert!(text.contains("Networks:      none"), "{text}");
        assert!(node_detail(v1::InspectNodeResponse::default()).is_err(), "no node");
    }

    #[test]
    fn a_heartbeat_is_known_to_the_leader_only_and_engine_facts_once_reported() {
        let mut wire = wire_node(v1::NodeRole::Worker);
        wire.from_leader = false;
        if let Some(n) = wire.node.as_mut() {
            n.engine = None;
        }
        let d = node_detail(wire.clone()).expect("detail");
        let json = serde_json::to_value(&d).expect("json");
        assert_eq!(json["heartbeat_age_ms"], serde_json::Value::Null, "a follower's answer is not a heartbeat");
        assert!(json.get("engine").is_none(), "{json}");
        let text = node_lines(&d).join("\n");
        assert!(text.contains("Heartbeat:     unknown (ask the leader"), "{text}");
        assert!(text.contains("Platform:      - (not reported yet)\n"), "{text}");
        assert!(text.contains("Engine labels: -\n"), "{text}");
        wire.from_leader = true;
        wire.heartbeat_age_ms = None;
        let text = node_lines(&node_detail(wire.clone()).expect("detail")).join("\n");
        assert!(text.contains("Heartbeat:     none since this leader was elected"), "{text}");
        wire.heartbeat_age_ms = Some(180_000);
        let text = node_lines(&node_detail(wire).expect("detail")).join("\n");
        assert!(text.contains("Heartbeat:     3 minutes ago"), "{text}");
    }
}
