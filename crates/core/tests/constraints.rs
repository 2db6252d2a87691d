//! Placement constraints match nodes as swarmkit's
//! `manager/constraint/constraint.go` (`NodeMatches`) does: keys and values
//! compared case-insensitively (`strings.EqualFold`), label names as
//! written, `node.ip` against the node's address or a CIDR subnet.

use std::collections::BTreeMap;

use stackd_core::model::{Availability, Constraint, Node, NodeRole, NodeState, Resources};

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
