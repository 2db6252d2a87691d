//! The security state and the node membership commands: init with a CA and
//! a first node, join secrets, client tokens, join, promote/demote, remove.
//! Every refusal changes nothing.

use std::collections::BTreeMap;

mod common;

use common::{node, token};
use stackd_core::command::TaskStatusUpdate;
use stackd_core::model::*;
use stackd_core::security::{Action, SecurityError};
use stackd_core::state::{Action as EventAction, NODE_REMOVED, ObjectKind};
use stackd_core::{ClientToken, ClusterState, Command, Security, TokenRole};

const CA_KEY: &[u8] = b"-----BEGIN PRIVATE KEY-----\nTHE-CA-KEY\n-----END PRIVATE KEY-----\n";

fn security() -> Security {
    let admin = token("00000000000000a1", "admin", TokenRole::Admin, &[]);
    Security {
        ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        ca_key_pem: Blob(CA_KEY.to_vec()),
        manager_secret: Blob(vec![0x11; 16]),
        worker_secret: Blob(vec![0x22; 16]),
        tokens: BTreeMap::from([(admin.id.clone(), admin)]),
        recovery_recipient: String::new(),
        unlock_key: Blob::default(),
    }
}

struct Cluster {
    state: ClusterState,
    index: u64,
}

impl Cluster {
    /// A cluster initialised by manager `m1`, with security.
    fn new() -> Self {
        let mut c = Cluster { state: ClusterState::default(), index: 0 };
        let init = Command::InitCluster {
            cluster_id: "c".into(),
            at: 5,
            security: Some(security()),
            node: Some(node("m1", NodeRole::Manager)),
        };
        assert_eq!(c.apply(init).rejected, None);
        c
    }

    fn apply(&mut self, cmd: Command) -> stackd_core::state::Applied {
        self.index += 1;
        let out = self.state.apply(self.index, &cmd);
        for pin in self.state.keep_tags("built on the node", cmd.at()) {
            self.index += 1;
            self.state.apply(self.index, &pin);
        }
        out
    }

    /// Applies `cmd`, which must be refused without changing anything; returns why.
    fn refused(&mut self, cmd: Command) -> String {
        let before = self.state.clone();
        let r = self.apply(cmd);
        assert!(r.events.is_empty(), "{:?}", r.events);
        assert_eq!(self.state, before);
        r.rejected.expect("refused")
    }
}

#[test]
fn init_stores_the_security_state_and_the_first_node() {
    let c = Cluster::new();
    assert_eq!(c.state.cluster_id, "c");
    assert_eq!(c.state.security, security());
    let m1 = &c.state.nodes["m1"];
    assert_eq!(m1.role, NodeRole::Manager);
    assert_eq!(m1.state, NodeState::Unknown, "nobody has heard from it yet");
    assert_eq!(m1.updated_at, 5);
    // Once initialised, an init changes nothing.
    let mut c = c;
    let again = Command::InitCluster { cluster_id: "d".into(), at: 6, security: None, node: None };
    assert_eq!(c.refused(again), "the cluster is initialised already");
}

#[test]
fn an_invalid_init_changes_nothing() {
    let cases = [
        (Some(Security { worker_secret: Blob(vec![0x11; 16]), ..security() }), None, "must differ"),
        (Some(Security { ca_key_pem: Blob::default(), ..security() }), None, "CA certificate and key are missing"),
        (Some(security()), Some(node("w1", NodeRole::Worker)), "must be a manager"),
        (None, Some(Node { addr: String::new(), ..node("m1", NodeRole::Manager) }), "needs an address"),
        (None, Some(node("", NodeRole::Manager)), "needs an id"),
    ];
    for (security, node, why) in cases {
        let mut s = ClusterState::default();
        let r = s.apply(1, &Command::InitCluster { cluster_id: "c".into(), at: 1, security, node });
        assert!(r.rejected.as_deref().is_some_and(|r| r.contains(why)), "{:?} should say {why}", r.rejected);
        assert_eq!(s, ClusterState::default());
    }
}

#[test]
fn a_rotated_join_secret_replaces_the_old_one() {
    let mut c = Cluster::new();
    assert_eq!(c.state.security.join_role(&[0x11; 16]), Some(NodeRole::Manager));
    let r = c.apply(Command::RotateJoinSecret { role: NodeRole::Manager, secret: Blob(vec![0x33; 16]), at: 9 });
    assert_eq!(r.rejected, None);
    assert!(r.events.is_empty(), "security changes are not events: watchers are readers");
    assert_eq!(c.state.security.join_role(&[0x11; 16]), None);
    assert_eq!(c.state.security.join_role(&[0x33; 16]), Some(NodeRole::Manager));
    assert_eq!(c.state.security.join_role(&[0x22; 16]), Some(NodeRole::Worker));
    let why = c.refused(Command::RotateJoinSecret { role: NodeRole::Worker, secret: Blob(vec![1; 8]), at: 10 });
    assert_eq!(why, SecurityError::ShortSecret { role: NodeRole::Worker, len: 8 }.to_string());
    let why = c.refused(Command::RotateJoinSecret { role: NodeRole::Worker, secret: Blob(vec![0x33; 16]), at: 10 });
    assert_eq!(why, SecurityError::SameSecrets.to_string());
}

#[test]
fn a_recovery_recipient_is_replaced_and_a_malformed_one_refused() {
    let mut c = Cluster::new();
    let before = c.state.state_hash();
    let r = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    let applied = c.apply(Command::SetRecoveryRecipient { recipient: r.into(), at: 9 });
    assert_eq!(applied.rejected, None);
    assert_eq!(c.state.security.recovery_recipient, r);
    assert_ne!(c.state.state_hash(), before, "the recipient is part of the state");
    let why = c.refused(Command::SetRecoveryRecipient { recipient: "AGE-SECRET-KEY-1X".into(), at: 10 });
    assert!(why.contains("not an age recipient"), "{why}");
    assert_eq!(c.state.security.recovery_recipient, r, "a refused command changes nothing");
    let json = serde_json::to_value(Command::SetRecoveryRecipient { recipient: r.into(), at: 1 }).expect("encode");
    assert_eq!(json["type"], "set_recovery_recipient");
}

#[test]
fn an_unlock_key_is_set_replaced_and_cleared_and_a_malformed_one_refused() {
    let mut c = Cluster::new();
    let before = c.state.state_hash();
    let key = format!("STKLOCK-1-{}", "A".repeat(43));
    let applied =
        c.apply(Command::SetUnlockKey { key: Blob(key.clone().into_bytes()), previous: Blob::default(), at: 9 });
    assert_eq!(applied.rejected, None);
    assert_eq!(c.state.security.unlock_key.0, key.as_bytes());
    assert_ne!(c.state.state_hash(), before, "the key is part of the state");
    for bad in ["STKLOCK-1-short".to_string(), format!("SWMKEY-1-{}", "A".repeat(44))] {
        let previous = Blob(key.clone().into_bytes());
        let why = c.refused(Command::SetUnlockKey { key: Blob(bad.into_bytes()), previous, at: 10 });
        assert!(why.contains("not an unlock key"), "{why}");
        assert_eq!(c.state.security.unlock_key.0, key.as_bytes(), "a refused command changes nothing");
    }
    let debug = format!("{:?}", c.state.security);
    assert!(!debug.contains(&key), "the key never shows in Debug: {debug}");
    // A request that read another key than the one in force changes nothing.
    let other = Blob(format!("STKLOCK-1-{}", "B".repeat(43)).into_bytes());
    let why = c.refused(Command::SetUnlockKey { key: other.clone(), previous: Blob::default(), at: 11 });
    assert!(why.contains("changed meanwhile"), "{why}");
    assert_eq!(c.state.security.unlock_key.0, key.as_bytes());
    let previous = Blob(key.clone().into_bytes());
    assert_eq!(c.apply(Command::SetUnlockKey { key: Blob::default(), previous, at: 12 }).rejected, None);
    assert!(c.state.security.unlock_key.0.is_empty());
    assert_eq!(c.state.state_hash(), before, "off again: the state hashes as one that never had a key");
}

#[test]
fn tokens_are_created_once_and_revoked_by_id() {
    let mut c = Cluster::new();
    let ci = token("00000000000000c1", "ci", TokenRole::Deployer, &["app"]);
    let r = c.apply(Command::CreateToken { token: ci.clone(), at: 20 });
    assert_eq!(r.rejected, None);
    let stored = &c.state.security.tokens["00000000000000c1"];
    assert_eq!(stored.created_at, 20, "created_at is the command's time");
    assert_eq!(ClientToken { created_at: 0, ..stored.clone() }, ci);
    assert!(stored.allows(Action::DeployStack("app")));
    assert!(!stored.allows(Action::DeployStack("db")));

    let same_id = ClientToken { name: "other".into(), ..ci.clone() };
    assert!(c.refused(Command::CreateToken { token: same_id, at: 21 }).contains("exists already"));
    let same_name = ClientToken { id: "00000000000000c2".into(), ..ci.clone() };
    assert!(c.refused(Command::CreateToken { token: same_name, at: 21 }).contains("named ci exists already"));
    let bad_name = ClientToken { id: "00000000000000c3".into(), name: "-ci".into(), ..ci.clone() };
    assert!(c.refused(Command::CreateToken { token: bad_name, at: 21 }).contains("invalid token name"));
    let no_stack = token("00000000000000c4", "ci2", TokenRole::Deployer, &[]);
    assert!(c.refused(Command::CreateToken { token: no_stack, at: 21 }).contains("at least one stack"));

    let why = c.refused(Command::RevokeToken { id: "ci".into(), at: 22 });
    assert_eq!(why, "no token with id ci", "revoking takes the id; the name is resolved before proposing");
    assert_eq!(c.apply(Command::RevokeToken { id: ci.id.clone(), at: 22 }).rejected, None);
    assert!(c.state.security.token("ci").is_none());
    assert!(c.refused(Command::RevokeToken { id: ci.id.clone(), at: 23 }).contains("no token"));
    // The name is free again.
    let again = ClientToken { id: "00000000000000c5".into(), ..ci };
    assert_eq!(c.apply(Command::CreateToken { token: again, at: 24 }).rejected, None);
}

#[test]
fn a_node_joins_once() {
    let mut c = Cluster::new();
    let w1 = node("w1", NodeRole::Worker);
    let r = c.apply(Command::JoinNode { node: w1.clone(), at: 30 });
    assert_eq!(r.rejected, None);
    assert_eq!(r.events.len(), 1);
    assert_eq!((r.events[0].kind, r.events[0].action), (ObjectKind::Node, EventAction::Create));
    assert_eq!(r.events[0].message, "joined as worker");
    let stored = &c.state.nodes["w1"];
    assert_eq!(stored.state, NodeState::Unknown);
    assert_eq!(stored.updated_at, 30);
    assert_eq!(Node { state: NodeState::Ready, updated_at: 0, ..stored.clone() }, w1);
    let why = c.refused(Command::JoinNode { node: node("w1", NodeRole::Manager), at: 31 });
    assert_eq!(why, "a node with id w1 exists already");
    let why =
        c.refused(Command::JoinNode { node: Node { addr: String::new(), ..node("m2", NodeRole::Manager) }, at: 31 });
    assert!(why.contains("needs an address"), "{why}");
    // A worker needs no address: it serves nothing.
    let r = c.apply(Command::JoinNode { node: Node { addr: String::new(), ..node("w2", NodeRole::Worker) }, at: 32 });
    assert_eq!(r.rejected, None);
}

#[test]
fn roles_change_but_the_last_manager_stays() {
    let mut c = Cluster::new();
    c.apply(Command::JoinNode { node: node("w1", NodeRole::Worker), at: 30 });
    let why = c.refused(Command::SetNodeRole { id: "m1".into(), role: NodeRole::Worker, at: 31 });
    assert!(why.contains("last manager"), "{why}");
    assert_eq!(c.refused(Command::SetNodeRole { id: "nope".into(), role: NodeRole::Worker, at: 31 }), "no node nope");
    let r = c.apply(Command::SetNodeRole { id: "w1".into(), role: NodeRole::Manager, at: 32 });
    assert_eq!(r.rejected, None);
    assert_eq!(r.events[0].message, "role manager");
    assert_eq!(c.state.nodes["w1"].role, NodeRole::Manager);
    assert_eq!(c.state.nodes["w1"].updated_at, 32);
    // The same role again: accepted, nothing changes.
    let before = c.state.clone();
    let r = c.apply(Command::SetNodeRole { id: "w1".into(), role: NodeRole::Manager, at: 33 });
    assert_eq!((r.rejected, r.events.len()), (None, 0));
    assert_eq!(c.state, before);
    // Two managers: either may be demoted.
    assert_eq!(c.apply(Command::SetNodeRole { id: "m1".into(), role: NodeRole::Worker, at: 34 }).rejected, None);
    assert!(
        c.refused(Command::SetNodeRole { id: "w1".into(), role: NodeRole::Worker, at: 35 }).contains("last manager")
    );
}

#[test]
fn a_removed_node_takes_its_tasks_down_and_its_reports_are_ignored() {
    let mut c = Cluster::new();
    c.apply(Command::JoinNode { node: node("w1", NodeRole::Worker), at: 30 });
    assert!(c.refused(Command::RemoveNode { id: "m1".into(), at: 31 }).contains("last manager"));
    assert_eq!(c.refused(Command::RemoveNode { id: "nope".into(), at: 31 }), "no node nope");
    // One running task on w1 and one that had exited already.
    let svc = ServiceSpec::replicated("web", 2, TaskTemplate { image: "web:1".into(), ..Default::default() });
    let spec = StackSpec { name: "app".into(), services: [("web".to_string(), svc)].into(), ..Default::default() };
    assert_eq!(c.apply(Command::PutStack { spec, prune: false, registry_auth: None, at: 40 }).rejected, None);
    let plan = stackd_core::orchestrator::orchestrate(&c.state, 40).plan;
    c.apply(Command::ApplyPlan { plan, at: 40 });
    let ids: Vec<String> = c.state.tasks.keys().cloned().collect();
    assert_eq!(ids.len(), 2);
    let decisions = ids
        .iter()
        .map(|id| stackd_core::command::Placement::Assign { task_id: id.clone(), node_id: "w1".into() })
        .collect();
    c.apply(Command::Schedule { decisions, at: 41 });
    let report = |id: &str, state: TaskState, node: &str| Command::UpdateTaskStatus {
        updates: vec![TaskStatusUpdate {
            task_id: id.into(),
            node_id: node.into(),
            status: TaskStatus { state, timestamp: 42, container_id: format!("ctr-{id}"), ..Default::default() },
        }],
        at: 42,
    };
    c.apply(report(&ids[0], TaskState::Running, "w1"));
    c.apply(report(&ids[1], TaskState::Complete, "w1"));

    let r = c.apply(Command::RemoveNode { id: "w1".into(), at: 50 });
    assert_eq!(r.rejected, None);
    assert!(!c.state.nodes.contains_key("w1"));
    let removed = r.events.iter().find(|e| e.kind == ObjectKind::Node).expect("node event");
    assert_eq!((removed.action, removed.id.as_str()), (EventAction::Remove, "w1"));
    let live = &c.state.tasks[&ids[0]];
    assert_eq!(live.desired_state, DesiredState::Shutdown);
    assert_eq!(live.status.state, TaskState::Failed);
    assert_eq!(live.status.err, NODE_REMOVED);
    assert_eq!(live.status.timestamp, 50);
    assert_eq!(live.status.container_id, format!("ctr-{}", ids[0]), "the container id stays, for history");
    let ended = &c.state.tasks[&ids[1]];
    assert_eq!(ended.status.state, TaskState::Complete, "an ended task keeps its outcome");
    assert_eq!(ended.desired_state, DesiredState::Shutdown);

    // The removed node's agent may still report: nothing changes.
    let before = c.state.clone();
    let r = c.apply(report(&ids[0], TaskState::Orphaned, "w1"));
    assert!(r.events.is_empty());
    assert_eq!(c.state, before);
}

#[test]
fn the_state_hash_covers_security_and_debug_hides_its_secrets() {
    let c = Cluster::new();
    let mut other = c.state.clone();
    other.security.worker_secret = Blob(vec![0x44; 16]);
    assert_ne!(c.state.state_hash(), other.state_hash());
    let mut other = c.state.clone();
    other.security.tokens.clear();
    assert_ne!(c.state.state_hash(), other.state_hash());

    let shown = format!("{:?}", c.state);
    assert!(!shown.contains("THE-CA-KEY"), "{shown}");
    assert!(shown.contains(&format!("<{} bytes>", CA_KEY.len())), "{shown}");
    let cmd = Command::RotateJoinSecret { role: NodeRole::Worker, secret: Blob(b"0123456789-SECRET".to_vec()), at: 1 };
    assert!(!format!("{cmd:?}").contains("SECRET"));
}

#[test]
fn new_commands_round_trip_through_json_with_stable_names() {
    let cmds = [
        (
            Command::InitCluster {
                cluster_id: "c".into(),
                at: 1,
                security: Some(security()),
                node: Some(node("m1", NodeRole::Manager)),
            },
            "init_cluster",
        ),
        (Command::RotateJoinSecret { role: NodeRole::Worker, secret: Blob(vec![7; 16]), at: 2 }, "rotate_join_secret"),
        (Command::CreateToken { token: token("0a", "ci", TokenRole::Viewer, &[]), at: 3 }, "create_token"),
        (Command::RevokeToken { id: "0a".into(), at: 4 }, "revoke_token"),
        (Command::JoinNode { node: node("w1", NodeRole::Worker), at: 5 }, "join_node"),
        (Command::SetNodeRole { id: "w1".into(), role: NodeRole::Manager, at: 6 }, "set_node_role"),
        (Command::RemoveNode { id: "w1".into(), at: 7 }, "remove_node"),
    ];
    for (cmd, name) in cmds {
        let json = serde_json::to_value(&cmd).expect("encode");
        assert_eq!(json["type"], name);
        let back: Command = serde_json::from_value(json).expect("decode");
        assert_eq!(back, cmd);
        assert!(cmd.at() > 0);
    }
    let json = serde_json::to_value(security()).expect("encode");
    assert_eq!(json["manager_secret"], "EREREREREREREREREREREQ==", "secrets are base64");
    assert_eq!(json["tokens"]["00000000000000a1"]["role"], "admin");
}

#[test]
fn a_restore_keeps_the_saved_state_replaces_its_managers_and_raises_the_generation() {
    let mut saved = Cluster::new();
    assert_eq!(saved.apply(Command::JoinNode { node: node("w1", NodeRole::Worker), at: 10 }).rejected, None);
    assert_eq!(saved.apply(Command::JoinNode { node: node("m2", NodeRole::Manager), at: 11 }).rejected, None);
    let saved = saved.state;

    let mut c = Cluster { state: ClusterState::default(), index: 0 };
    let m9 = node("m9", NodeRole::Manager);
    let restore = Command::RestoreCluster { state: Box::new(saved.clone()), node: m9.clone(), at: 20 };
    // The entry holds the whole state, its templates shared as in snapshots; it reads back whole.
    let json = serde_json::to_string(&restore).expect("encode");
    assert!(json.contains("\"$templates\""), "{json}");
    assert_eq!(serde_json::from_str::<Command>(&json).expect("decode"), restore);
    let r = c.apply(restore.clone());
    assert_eq!(r.rejected, None);
    assert_eq!((c.state.cluster_id.as_str(), c.state.restore_generation), ("c", 1));
    assert_eq!(c.state.security, saved.security, "the same CA, secrets and tokens: workers and clients still fit");
    let names: Vec<&str> = c.state.nodes.values().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["host-m9", "host-w1"], "the old managers join afresh; the workers stay");
    assert!(r.events.iter().any(|e| e.message.contains("restored the cluster")), "{:?}", r.events);

    // Once only: a restored cluster is initialised.
    let why = c.refused(restore);
    assert!(why.contains("initialised already"), "{why}");
    // A restoring manager named like a worker of the state: refused, nothing applied.
    let mut fresh = Cluster { state: ClusterState::default(), index: 0 };
    let clash = Command::RestoreCluster {
        state: Box::new(saved.clone()),
        node: Node { id: "x1".into(), ..node("w1", NodeRole::Manager) },
        at: 20,
    };
    let why = fresh.refused(clash);
    assert!(why.contains("named host-w1"), "{why}");
    // A second restore of the restored state: generation 2.
    let mut again = Cluster { state: ClusterState::default(), index: 0 };
    let second =
        Command::RestoreCluster { state: Box::new(c.state.clone()), node: node("m8", NodeRole::Manager), at: 30 };
    assert_eq!(again.apply(second).rejected, None);
    assert_eq!(again.state.restore_generation, 2);
}
