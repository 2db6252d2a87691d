//! `UpdateNodeLabels` and `SetNodeAvailability` (`stackctl node update`):
//! labels are removed then added, each change is one event that lists
//! what changed, and a refused command changes nothing.

use std::collections::BTreeMap;

mod common;

use stackd_core::model::{Availability, NodeRole};
use stackd_core::state::{Action, ObjectKind};
use stackd_core::{ClusterState, Command, RefusalKind};

/// A cluster of manager `m1` and worker `w1`; the next index to apply at.
fn cluster() -> (ClusterState, u64) {
    let mut s = ClusterState::default();
    let m1 = common::node("m1", NodeRole::Manager);
    let init = Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: Some(m1) };
    assert_eq!(s.apply(1, &init).rejected, None);
    let join = Command::JoinNode { node: common::node("w1", NodeRole::Worker), at: 2 };
    assert_eq!(s.apply(2, &join).rejected, None);
    (s, 3)
}

fn labels(id: &str, add: &[(&str, &str)], remove: &[&str], at: u64) -> Command {
    Command::UpdateNodeLabels {
        id: id.into(),
        add: add.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        remove: remove.iter().map(|k| k.to_string()).collect(),
        at,
    }
}

fn node_labels(s: &ClusterState, id: &str) -> BTreeMap<String, String> {
    s.nodes[id].labels.clone()
}

#[test]
fn labels_are_added_replaced_and_removed_with_one_event_per_change() {
    let (mut s, i) = cluster();
    let r = s.apply(i, &labels("w1", &[("disk", "ssd"), ("role", "edge")], &[], 10));
    assert_eq!(r.rejected, None);
    assert_eq!(node_labels(&s, "w1"), BTreeMap::from([("disk".into(), "ssd".into()), ("role".into(), "edge".into())]));
    assert_eq!(s.nodes["w1"].updated_at, 10);
    assert_eq!(r.events.len(), 1, "{:?}", r.events);
    let e = &r.events[0];
    assert_eq!((e.kind, e.action, e.id.as_str(), e.name.as_str()), (ObjectKind::Node, Action::Update, "w1", "host-w1"));
    assert_eq!(e.message, "labels +disk=ssd +role=edge");

    // Replace one, remove another, and remove one it does not have.
    let r = s.apply(i + 1, &labels("w1", &[("disk", "nvme")], &["role", "zone"], 11));
    assert_eq!(r.rejected, None);
    assert_eq!(node_labels(&s, "w1"), BTreeMap::from([("disk".into(), "nvme".into())]));
    assert_eq!(r.events[0].message, "labels -role +disk=nvme");

    // The same again: no change, no event, no new `updated_at`.
    let before = s.clone();
    let r = s.apply(i + 2, &labels("w1", &[("disk", "nvme")], &["role"], 12));
    assert_eq!((r.rejected, r.events.len()), (None, 0));
    assert_eq!(s, before);

    // An empty value is a label too (`--label-add key`).
    assert_eq!(s.apply(i + 3, &labels("w1", &[("gpu", "")], &[], 13)).rejected, None);
    assert_eq!(node_labels(&s, "w1")["gpu"], "");
}

#[test]
fn availability_changes_once_with_an_event() {
    let (mut s, i) = cluster();
    let drain = Command::SetNodeAvailability { id: "w1".into(), availability: Availability::Drain, at: 10 };
    let r = s.apply(i, &drain);
    assert_eq!(r.rejected, None);
    assert_eq!(s.nodes["w1"].availability, Availability::Drain);
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].message, "availability drain");
    let before = s.clone();
    let r = s.apply(i + 1, &drain);
    assert_eq!((r.rejected, r.events.len()), (None, 0), "draining a drained node changes nothing");
    assert_eq!(s, before);
}

/// The kind `cmd` is refused with, after checking that nothing changed.
fn kind_of(s: &mut ClusterState, index: u64, cmd: &Command) -> (RefusalKind, String) {
    let before = s.clone();
    let r = s.apply(index, cmd);
    assert_eq!(*s, before, "{cmd:?} was refused, yet changed the state");
    assert!(r.events.is_empty(), "{cmd:?}: {:?}", r.events);
    let refusal = r.refusal().unwrap_or_else(|| panic!("{cmd:?} was accepted"));
    (refusal.kind, refusal.message)
}

#[test]
fn refused_label_changes_change_nothing() {
    let (mut s, i) = cluster();
    assert_eq!(s.apply(i, &labels("w1", &[("disk", "ssd")], &[], 10)).rejected, None);

    let (kind, why) = kind_of(&mut s, i + 1, &labels("n9", &[("disk", "ssd")], &[], 11));
    assert_eq!((kind, why.as_str()), (RefusalKind::NotFound, "no node n9"));
    let avail = Command::SetNodeAvailability { id: "n9".into(), availability: Availability::Pause, at: 11 };
    assert_eq!(kind_of(&mut s, i + 1, &avail).0, RefusalKind::NotFound);

    let long_value = "v".repeat(257);
    let long_key = "k".repeat(129);
    for (cmd, says) in [
        // A valid addition beside an invalid one: neither is made.
        (labels("w1", &[("zone", "a"), ("bad key", "x")], &[], 11), "node label key \"bad key\" is invalid"),
        (labels("w1", &[("-x", "1")], &[], 11), "node label key \"-x\" is invalid"),
        (labels("w1", &[("a=b", "1")], &[], 11), "node label key \"a=b\" is invalid"),
        (labels("w1", &[(&long_key, "1")], &[], 11), "is invalid"),
        (labels("w1", &[("zone", &long_value)], &[], 11), "the value of node label zone is invalid"),
        (labels("w1", &[("zone", "a\nb")], &[], 11), "the value of node label zone is invalid"),
        (labels("w1", &[("zone", " a")], &[], 11), "the value of node label zone is invalid"),
        (labels("w1", &[("zone", "a")], &["disk", "bad/ key"], 11), "node label key \"bad/ key\" is invalid"),
        (labels("w1", &[("disk", "hdd")], &["disk"], 11), "node label disk is both added and removed"),
    ] {
        let (kind, why) = kind_of(&mut s, i + 1, &cmd);
        assert_eq!(kind, RefusalKind::Invalid, "{cmd:?}");
        assert!(why.contains(says), "{why}");
    }

    // Too many labels: refused whole.
    let many: Vec<(String, String)> =
        (0..stackd_core::validate::MAX_NODE_LABELS).map(|k| (format!("l{k}"), "x".to_string())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (kind, why) = kind_of(&mut s, i + 1, &labels("w1", &many, &[], 11));
    assert_eq!(kind, RefusalKind::Invalid);
    assert!(why.contains("would have 65 labels, 64 at most"), "{why}");
    // With the one it has removed, they fit.
    assert_eq!(s.apply(i + 1, &labels("w1", &many, &["disk"], 11)).rejected, None);
    assert_eq!(s.nodes["w1"].labels.len(), 64);
}

#[test]
fn the_command_round_trips_as_json() {
    let cmd = labels("w1", &[("disk", "ssd")], &["role"], 7);
    let json = serde_json::to_value(&cmd).expect("encode");
    assert_eq!(json["type"], "update_node_labels");
    assert_eq!(serde_json::from_value::<Command>(json).expect("decode"), cmd);
    assert_eq!(cmd.at(), 7);
}
