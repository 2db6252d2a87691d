//! Every refusal of `apply` has the kind that says what the caller should do
//! (the manager maps the kind, and only the kind, to a gRPC code), and a
//! result keeps its encoding readable by managers before and after kinds.

use std::collections::BTreeMap;

mod common;

use stackd_core::model::{Blob, DataKind, Node, NodeRole};
use stackd_core::state::Applied;
use stackd_core::{ClusterState, Command, Refusal, RefusalKind};

fn manager(id: &str) -> Node {
    common::node(id, NodeRole::Manager)
}

/// A cluster initialised by manager `m1`; the next index to apply at.
fn cluster() -> (ClusterState, u64) {
    let mut s = ClusterState::default();
    let init = Command::InitCluster { cluster_id: "c".into(), at: 1, security: None, node: Some(manager("m1")) };
    assert_eq!(s.apply(1, &init).rejected, None);
    (s, 2)
}

fn create(name: &str, data: &[u8]) -> Command {
    Command::CreateObject {
        kind: DataKind::Config,
        name: name.into(),
        data: Blob(data.to_vec()),
        labels: BTreeMap::new(),
        at: 2,
    }
}

/// The kind `cmd` is refused with, after checking that nothing changed.
fn kind_of(s: &mut ClusterState, index: u64, cmd: &Command) -> RefusalKind {
    let before = s.clone();
    let r = s.apply(index, cmd);
    assert_eq!(*s, before, "{cmd:?} was refused, yet changed the state");
    let refusal = r.refusal().unwrap_or_else(|| panic!("{cmd:?} was accepted"));
    assert_eq!(r.rejected.as_deref(), Some(refusal.message.as_str()));
    refusal.kind
}

#[test]
fn a_command_naming_what_the_cluster_does_not_have_is_not_found() {
    let (mut s, i) = cluster();
    for cmd in [
        Command::RemoveStack { name: "shop".into(), at: 2 },
        Command::ForceUpdate { service: "shop_web".into(), at: 2 },
        Command::RemoveObject { kind: DataKind::Secret, name: "key".into(), at: 2 },
        Command::SetNodeRole { id: "n9".into(), role: NodeRole::Worker, at: 2 },
        Command::RemoveNode { id: "n9".into(), at: 2 },
        Command::RevokeToken { id: "0123456789abcdef".into(), at: 2 },
    ] {
        assert_eq!(kind_of(&mut s, i, &cmd), RefusalKind::NotFound, "{cmd:?}");
    }
}

#[test]
fn a_command_wrong_whatever_the_state_is_invalid() {
    let (mut s, i) = cluster();
    let too_big = vec![0; stackd_core::model::MAX_OBJECT_BYTES + 1];
    for cmd in [create("-bad", b"x"), create("big", &too_big)] {
        assert_eq!(kind_of(&mut s, i, &cmd), RefusalKind::Invalid, "{cmd:?}");
    }
    let nested = Command::Batch { commands: vec![Command::Batch { commands: vec![] }] };
    let r = s.apply(i, &nested);
    assert_eq!(r.batch[0].refusal().map(|r| r.kind), Some(RefusalKind::Invalid), "{r:?}");
}

#[test]
fn a_command_creating_what_exists_already_is_already_exists() {
    let (mut s, i) = cluster();
    assert_eq!(s.apply(i, &create("app.conf", b"x")).rejected, None);
    assert_eq!(kind_of(&mut s, i + 1, &create("app.conf", b"y")), RefusalKind::AlreadyExists);
    let again = Command::InitCluster { cluster_id: "c".into(), at: 3, security: None, node: None };
    assert_eq!(kind_of(&mut s, i + 1, &again), RefusalKind::AlreadyExists);
    let mut twin = manager("m2");
    twin.name = "host-m1".into();
    assert_eq!(kind_of(&mut s, i + 1, &Command::JoinNode { node: twin, at: 3 }), RefusalKind::AlreadyExists);
}

#[test]
fn a_command_the_state_does_not_allow_now_is_a_failed_precondition() {
    let (mut s, i) = cluster();
    for cmd in [
        Command::RemoveNode { id: "m1".into(), at: 2 },
        Command::SetNodeRole { id: "m1".into(), role: NodeRole::Worker, at: 2 },
    ] {
        assert_eq!(kind_of(&mut s, i, &cmd), RefusalKind::FailedPrecondition, "{cmd:?}");
    }
}

/// Managers forward results as JSON, maybe across versions during an
/// upgrade: the kind travels beside the message, which stays a string.
#[test]
fn a_result_reads_the_same_before_and_after_refusal_kinds() {
    let refused = Applied::refused(Refusal::not_found("no stack named \"shop\""));
    let json = serde_json::to_value(&refused).expect("json");
    assert_eq!(json["rejected"], "no stack named \"shop\"", "an older manager reads the message: {json}");
    assert_eq!(json["rejected_kind"], "not_found");
    assert_eq!(serde_json::from_value::<Applied>(json).expect("back"), refused);

    let old = r#"{"events":[],"rejected":"no node n9","deploy":null}"#;
    let old: Applied = serde_json::from_str(old).expect("an older manager's result");
    assert_eq!(old.refusal(), Some(Refusal::failed_precondition("no node n9")));

    let applied = serde_json::to_value(Applied::default()).expect("json");
    assert!(applied.get("rejected_kind").is_none(), "nothing new is written when nothing was refused: {applied}");
}
