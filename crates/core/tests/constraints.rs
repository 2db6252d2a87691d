//! Placement constraints match nodes as swarmkit's
//! `manager/constraint/constraint.go` (`NodeMatches`) does: keys and values
//! compared case-insensitively (`strings.EqualFold`), label names as
//! written, `node.ip` against the node's address or a CIDR subnet.

use std::collections::BTreeMap;

use stackd_core::model::{Availability, Constraint, EngineDescription, Node, NodeRole, NodeState, Resources};

fn node(addr: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        id: "9d2k4x7q1m0b".into(),
        name: "Web-1".into(),
        addr: addr.into(),
        role: NodeRole::Manager,
        availability: Availability::Active,
        state: NodeState::Ready,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        resources: Resources::default(),
        engine_version: "27.0".into(),
        engine: Default::default(),
        updated_at: 0,
    }
}

fn holds(constraint: &str, node: &Node) -> bool {
    Constraint::parse(constraint).unwrap_or_else(|e| panic!("{constraint}: {e}")).matches(node)
}

/// swarmkit: `strings.EqualFold(constraint.key, "node.hostname")` and
/// `Match` compares the value with `strings.EqualFold`.
#[test]
fn keys_and_values_in_any_case() {
    let n = node("10.0.0.5:4280", &[("zone", "EU")]);
    for c in [
        "node.hostname == web-1",
        "NODE.HOSTNAME == WEB-1",
        "node.role == Manager",
        "Node.Role != worker",
        "node.id == 9D2K4X7Q1M0B",
        "node.platform.os == Linux",
        "node.labels.zone == eu",
        "node.Labels.zone == eu",
    ] {
        assert!(holds(c, &n), "{c} should hold");
    }
}

/// swarmkit: "label itself is case sensitive" — `node.labels.Zone` is
/// another label than `zone`; a node without it has the empty value.
#[test]
fn label_names_are_case_sensitive() {
    let n = node("10.0.0.5:4280", &[("zone", "eu")]);
    assert!(!holds("node.labels.Zone == eu", &n));
    assert!(holds("node.labels.Zone != eu", &n));
}

/// swarmkit: `node.ip` is the node's address, compared with an address
/// (`ip.Equal`) or a subnet (`subnet.Contains`); a node whose address is
/// not known is in no subnet and equal to no address.
#[test]
fn node_ip_matches_addresses_and_subnets() {
    let n = node("10.0.0.5:4280", &[]);
    assert!(holds("node.ip == 10.0.0.5", &n));
    assert!(holds("node.ip == 10.0.0.0/24", &n));
    assert!(holds("node.ip != 10.1.0.0/16", &n));
    assert!(!holds("node.ip != 10.0.0.5", &n));
    let v6 = node("[2001:db8::2]:4280", &[]);
    assert!(holds("node.ip == 2001:db8::2", &v6));
    assert!(holds("node.ip == 2001:db8::/32", &v6));
    let unknown = node("", &[]);
    assert!(!holds("node.ip == 10.0.0.5", &unknown));
    assert!(holds("node.ip != 10.0.0.5", &unknown));
}

/// swarmkit: `node.platform.arch` is the engine's `Architecture`, and
/// `engine.labels.<label>` the engine's `Labels` (label as written, value
/// in any case); stackd matches what the agent reported, and a node that
/// has not reported yet has neither (the empty value), as a missing label.
#[test]
fn architecture_and_engine_labels_match_what_the_agent_reported() {
    let mut n = node("10.0.0.5:4280", &[("disk", "hdd")]);
    assert!(!holds("node.platform.arch == x86_64", &n));
    assert!(holds("node.platform.arch != x86_64", &n));
    assert!(!holds("engine.labels.disk == ssd", &n), "a node label is not an engine label");
    n.engine = EngineDescription {
        os: "linux".into(),
        arch: "x86_64".into(),
        labels: EngineDescription::labels_from_engine(["disk=SSD", "gpu", "rack=r1=a"]),
        ..EngineDescription::default()
    };
    assert!(holds("node.platform.arch == X86_64", &n));
    assert!(holds("node.platform.arch != aarch64", &n));
    assert!(holds("node.platform.os == linux", &n));
    assert!(holds("engine.labels.disk == ssd", &n));
    assert!(holds("Engine.Labels.disk != hdd", &n));
    assert!(!holds("engine.labels.Disk == ssd", &n), "label names are case sensitive");
    assert!(holds("node.labels.disk == hdd", &n), "an engine label is not a node label");
    assert_eq!(n.engine.labels.get("gpu").map(String::as_str), Some(""));
    assert_eq!(n.engine.labels.get("rack").map(String::as_str), Some("r1=a"));
}
