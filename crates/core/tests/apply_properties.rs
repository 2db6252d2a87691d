//! Property tests of the replicated state machine's `apply`.

use std::collections::{BTreeMap, BTreeSet};

mod common;

use common::token;
use proptest::prelude::*;
use stackd_core::command::{Command, TaskStatusUpdate};
use stackd_core::model::*;
use stackd_core::orchestrator::orchestrate;
use stackd_core::scheduler::{Scheduler, SpreadScheduler};
use stackd_core::state::holds_addresses;
use stackd_core::{ClusterState, Security, TokenRole};

fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        name: id.into(),
        addr: String::new(),
        role: NodeRole::Manager,
        availability: Availability::Active,
        state: NodeState::Ready,
        labels: Default::default(),
        resources: Resources::default(),
        engine_version: String::new(),
        engine: Default::default(),
        updated_at: 0,
    }
}

/// Nodes the operations join, make ready, promote, demote and remove.
const NODES: [&str; 5] = ["n1", "n2", "j0", "j1", "j2"];
/// Names the operations give tokens (some collide).
const TOKEN_NAMES: [&str; 4] = ["ci", "deploy", "look", "bad name"];
/// The id of the admin token made at init; the operations never revoke it.
const ADMIN_ID: &str = "00000000000000ad";

fn security() -> Security {
    Security {
        ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        ca_key_pem: Blob(b"ca key".to_vec()),
        manager_secret: Blob(vec![1; 16]),
        worker_secret: Blob(vec![2; 16]),
        tokens: BTreeMap::from([(ADMIN_ID.to_string(), token(ADMIN_ID, "admin", TokenRole::Admin, &[]))]),
        recovery_recipient: String::new(),
        unlock_key: Blob::default(),
    }
}

fn stack(replicas: u64, image: &str, name: &str) -> StackSpec {
    stack_of(ServiceMode::Replicated { replicas }, image, name)
}

fn stack_of(mode: ServiceMode, image: &str, name: &str) -> StackSpec {
    let svc = ServiceSpec {
        autoscale: None,
        name: "web".into(),
        mode,
        task: TaskTemplate {
            image: image.into(),
            networks: vec![NetworkAttachment { network: format!("{name}_default"), aliases: Vec::new() }],
            ..Default::default()
        },
        restart: RestartPolicy::default(),
        update: UpdateConfig::default(),
        rollback: UpdateConfig::rollback_default(),
        labels: Default::default(),
        endpoint_mode: EndpointMode::Vip,
        depends_on: Vec::new(),
    };
    let net = NetworkSpec { name: format!("{name}_default"), ..Default::default() };
    StackSpec {
        name: name.into(),
        services: [("web".to_string(), svc)].into(),
        networks: [("default".to_string(), net)].into(),
        ..Default::default()
    }
}

/// A random operation on the cluster; the orchestrator and scheduler run after each.
#[derive(Clone, Debug)]
enum Op {
    Deploy { replicas: u64, image: u8, job: bool },
    Remove,
    Report { pick: prop::sample::Index, state: u8, exit: i64 },
    Tick(u64),
    Drain(bool),
    Join { node: u8, manager: bool },
    Ready(u8),
    SetRole { node: u8, manager: bool },
    RemoveNode(u8),
    CreateToken { id: u8, name: u8, role: u8 },
    RevokeToken(u8),
    Rotate { manager: bool, byte: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..6, 0u8..3, any::<bool>()).prop_map(|(replicas, image, job)| Op::Deploy { replicas, image, job }),
        Just(Op::Remove),
        (any::<prop::sample::Index>(), 0u8..11, -2i64..3).prop_map(|(pick, state, exit)| Op::Report {
            pick,
            state,
            exit
        }),
        (0u64..20_000).prop_map(Op::Tick),
        any::<bool>().prop_map(Op::Drain),
        (2u8..5, any::<bool>()).prop_map(|(node, manager)| Op::Join { node, manager }),
        (0u8..5).prop_map(Op::Ready),
        (0u8..5, any::<bool>()).prop_map(|(node, manager)| Op::SetRole { node, manager }),
        (0u8..5).prop_map(Op::RemoveNode),
        (0u8..4, 0u8..4, 0u8..3).prop_map(|(id, name, role)| Op::CreateToken { id, name, role }),
        (0u8..4).prop_map(Op::RevokeToken),
        (any::<bool>(), 0u8..4).prop_map(|(manager, byte)| Op::Rotate { manager, byte }),
    ]
}

/// The networks' addresses agree with the tasks: each task that holds
/// addresses has them recorded under its id, in a slice of its node; nothing
/// else is recorded (no leak); networks no stack declares are gone once unused.
fn check_addresses(s: &ClusterState) -> Result<(), TestCaseError> {
    for t in s.tasks.values() {
        if holds_addresses(t) && t.node_id.is_some() {
            prop_assert_eq!(t.addresses.len(), 1, "task {} on {:?} has no address", &t.id, &t.node_id);
        }
        if !holds_addresses(t) {
            continue;
        }
        for (net, ip) in &t.addresses {
            let alloc = s.net.networks.get(net);
            prop_assert!(alloc.is_some(), "task {}'s network {} has no allocation", &t.id, net);
            let alloc = alloc.expect("checked");
            prop_assert_eq!(alloc.tasks.get(ip), Some(&t.id), "task {}'s address {} is not recorded", &t.id, ip);
            prop_assert_eq!(alloc.node_of(*ip), t.node_id.as_ref(), "{} is not in a slice of the task's node", ip);
        }
    }
    for (net, alloc) in &s.net.networks {
        for (ip, id) in &alloc.tasks {
            let t = s.tasks.get(id);
            prop_assert!(
                t.is_some_and(|t| holds_addresses(t) && t.addresses.get(net) == Some(ip)),
                "{} on {} leaked by {}",
                ip,
                net,
                id
            );
        }
        let declared = s.stacks.values().any(|st| st.networks.values().any(|n| &n.name == net));
        prop_assert!(declared || alloc.in_use(), "network {} is neither declared nor used", net);
        for sid in alloc.vips.keys() {
            prop_assert!(s.services.contains_key(sid), "VIP of removed service {}", sid);
        }
    }
    Ok(())
}

fn role(manager: bool) -> NodeRole {
    if manager { NodeRole::Manager } else { NodeRole::Worker }
}

const STATES: [TaskState; 11] = TaskState::ALL;

/// Turns random operations into the commands a cluster would apply.
fn commands(ops: &[Op]) -> Vec<Command> {
    let mut state = ClusterState::default();
    let mut out = Vec::new();
    let mut now = 1_000_000u64;
    let push = |state: &mut ClusterState, out: &mut Vec<Command>, cmd: Command| {
        state.apply(out.len() as u64 + 1, &cmd);
        let at = cmd.at();
        out.push(cmd);
        // The agents' answers for images built on the nodes.
        for pin in state.keep_tags("built on the node", at) {
            state.apply(out.len() as u64 + 1, &pin);
            out.push(pin);
        }
    };
    let init = Command::InitCluster {
        cluster_id: "c".into(),
        at: 0,
        security: Some(security()),
        node: Some(Node { addr: "m0:4280".into(), ..node("m0") }),
    };
    push(&mut state, &mut out, init);
    push(&mut state, &mut out, Command::UpsertNode { node: node("n1"), at: 0 });
    push(&mut state, &mut out, Command::UpsertNode { node: node("n2"), at: 0 });
    for op in ops {
        let cmd = match op {
            Op::Deploy { replicas, image, job } => {
                let mode = if *job {
                    ServiceMode::ReplicatedJob { replicas: *replicas, max_concurrent: 2 }
                } else {
                    ServiceMode::Replicated { replicas: *replicas }
                };
                Command::PutStack {
                    spec: stack_of(mode, &format!("web:{image}"), "app"),
                    prune: false,
                    registry_auth: None,
                    at: now,
                }
            }
            Op::Remove => Command::RemoveStack { name: "app".into(), at: now },
            Op::Report { pick, state: s, exit } => {
                let assigned: Vec<&Task> = state.tasks.values().filter(|t| t.node_id.is_some()).collect();
                if assigned.is_empty() {
                    continue;
                }
                let t = assigned[pick.index(assigned.len())];
                let status = TaskStatus {
                    state: STATES[*s as usize],
                    timestamp: now,
                    exit_code: Some(*exit),
                    ..Default::default()
                };
                Command::UpdateTaskStatus {
                    updates: vec![TaskStatusUpdate {
                        task_id: t.id.clone(),
                        node_id: t.node_id.clone().unwrap_or_default(),
                        status,
                    }],
                    at: now,
                }
            }
            Op::Tick(ms) => {
                now += ms;
                continue;
            }
            Op::Drain(on) => Command::SetNodeAvailability {
                id: "n1".into(),
                availability: if *on { Availability::Drain } else { Availability::Active },
                at: now,
            },
            Op::Join { node: n, manager } => {
                let id = NODES[*n as usize];
                Command::JoinNode {
                    node: Node { addr: format!("{id}:4280"), role: role(*manager), ..node(id) },
                    at: now,
                }
            }
            Op::Ready(n) => Command::SetNodeState { id: NODES[*n as usize].into(), state: NodeState::Ready, at: now },
            Op::SetRole { node: n, manager } => {
                Command::SetNodeRole { id: NODES[*n as usize].into(), role: role(*manager), at: now }
            }
            Op::RemoveNode(n) => Command::RemoveNode { id: NODES[*n as usize].into(), at: now },
            Op::CreateToken { id, name, role } => {
                let (role, stacks): (TokenRole, &[&str]) = match role {
                    0 => (TokenRole::Admin, &[]),
                    1 => (TokenRole::Deployer, &["app"]),
                    _ => (TokenRole::Viewer, &[]),
                };
                let t = token(&format!("{id:016x}"), TOKEN_NAMES[*name as usize], role, stacks);
                Command::CreateToken { token: t, at: now }
            }
            Op::RevokeToken(id) => Command::RevokeToken { id: format!("{id:016x}"), at: now },
            Op::Rotate { manager, byte } => {
                Command::RotateJoinSecret { role: role(*manager), secret: Blob(vec![*byte; 16]), at: now }
            }
        };
        push(&mut state, &mut out, cmd);
        let plan = orchestrate(&state, now).plan;
        if !plan.is_empty() {
            push(&mut state, &mut out, Command::ApplyPlan { plan, at: now });
        }
        let decisions = SpreadScheduler.schedule(&state);
        if !decisions.is_empty() {
            push(&mut state, &mut out, Command::Schedule { decisions, at: now });
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Two managers applying the same log end in the same state.
    #[test]
    fn apply_is_deterministic(ops in proptest::collection::vec(op(), 0..60)) {
        let cmds = commands(&ops);
        let mut a = ClusterState::default();
        let mut b = ClusterState::default();
        for (i, c) in cmds.iter().enumerate() {
            let ra = a.apply(i as u64 + 1, c);
            let rb = b.apply(i as u64 + 1, c);
            prop_assert_eq!(ra, rb);
        }
        prop_assert_eq!(a.state_hash(), b.state_hash());
        // Replaying through JSON (the log's encoding) changes nothing either.
        let mut c = ClusterState::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let decoded: Command = serde_json::from_slice(&serde_json::to_vec(cmd).expect("encode")).expect("decode");
            c.apply(i as u64 + 1, &decoded);
        }
        prop_assert_eq!(a, c);
    }

    /// Observed states never go back, but for an orphan taken back when its
    /// node returns (`orphaned` → `assigned`); a stopped task is never wanted
    /// again; no slot ever holds two wanted tasks of the same template (an
    /// orphan, or a task on a drained node, no longer holds its slot); a job
    /// slot
    /// completes at most once per revision and gets no task after that.
    #[test]
    fn task_invariants_hold(ops in proptest::collection::vec(op(), 0..60)) {
        let cmds = commands(&ops);
        let mut s = ClusterState::default();
        for (i, c) in cmds.iter().enumerate() {
            let before = s.clone();
            s.apply(i as u64 + 1, c);
            for (id, t) in &s.tasks {
                if let Some(old) = before.tasks.get(id) {
                    let taken_back = matches!(c, Command::SetNodeState { state: NodeState::Ready, .. })
                        && old.status.state == TaskState::Orphaned
                        && t.status.state == TaskState::Assigned
                        && t.desired_state == DesiredState::Running;
                    prop_assert!(taken_back || t.status.state >= old.status.state, "task {} went from {} to {}", id, old.status.state, t.status.state);
                    prop_assert!(t.desired_state >= old.desired_state);
                }
            }
            for svc in s.services.values() {
                let mut seen = std::collections::BTreeSet::new();
                // A task on a drained node leaves its slot to its replacement.
                let drained = |t: &Task| t.node_id.as_ref().and_then(|n| s.nodes.get(n)).is_some_and(|n| n.availability == Availability::Drain);
                for t in s.tasks_of(&svc.id).filter(|t| t.desired_state == DesiredState::Running && !t.is_orphaned() && t.slot > 0 && !drained(t)) {
                    prop_assert!(seen.insert((t.slot, serde_json::to_string(&t.template).expect("json"))), "slot {} holds two wanted tasks", t.slot);
                }
                if let ServiceMode::ReplicatedJob { replicas, max_concurrent } = svc.spec.mode {
                    for slot in 1..=replicas {
                        let mut run: Vec<&Task> = s.tasks_of(&svc.id).filter(|t| t.slot == slot && t.revision == svc.revision).collect();
                        run.sort_by_key(|t| (t.created_at, t.id.clone()));
                        // Tasks created in the same millisecond have no order: none may be
                        // created later than the slot's first completed task.
                        if let Some(c) = run.iter().find(|t| t.status.state == TaskState::Complete) {
                            for t in &run {
                                prop_assert!(t.created_at <= c.created_at, "slot {} got a task after it completed", slot);
                            }
                        }
                    }
                    let live = s.tasks_of(&svc.id).filter(|t| t.revision == svc.revision && t.desired_state == DesiredState::Running && !t.status.state.is_terminal()).count() as u64;
                    prop_assert!(live <= max_concurrent, "{} job tasks in flight, max_concurrent {}", live, max_concurrent);
                }
            }
            check_addresses(&s)?;
        }
    }

    /// A refused command changes nothing.
    #[test]
    fn refused_commands_change_nothing(ops in proptest::collection::vec(op(), 0..30), bad in 0u8..13) {
        let cmds = commands(&ops);
        let mut s = ClusterState::default();
        for (i, c) in cmds.iter().enumerate() {
            s.apply(i as u64 + 1, c);
        }
        let before = s.clone();
        // Some node always exists: the last manager can be neither removed nor demoted.
        let existing = s.nodes.values().next().cloned().expect("a node");
        let unknown_token = "ffffffffffffffff";
        let cmd = match bad {
            0 => Command::PutStack { spec: stack(1, "", "app"), prune: true, registry_auth: None, at: 5 },
            1 => Command::PutStack { spec: stack(1, "web:1", "bad name!"), prune: false, registry_auth: None, at: 5 },
            2 => Command::RemoveStack { name: "no-such-stack".into(), at: 5 },
            3 => Command::JoinNode { node: Node { role: NodeRole::Worker, ..existing }, at: 5 },
            4 => Command::CreateToken { token: token(ADMIN_ID, "fresh", TokenRole::Viewer, &[]), at: 5 },
            5 => Command::CreateToken { token: token(unknown_token, "admin", TokenRole::Viewer, &[]), at: 5 },
            6 => Command::CreateToken { token: token(unknown_token, "bad name", TokenRole::Viewer, &[]), at: 5 },
            7 => Command::RevokeToken { id: unknown_token.into(), at: 5 },
            8 => Command::RemoveNode { id: "no-such-node".into(), at: 5 },
            9 => Command::SetNodeRole { id: "no-such-node".into(), role: NodeRole::Manager, at: 5 },
            10 => Command::RotateJoinSecret { role: NodeRole::Worker, secret: Blob(vec![9; 15]), at: 5 },
            11 => Command::InitCluster { cluster_id: "d".into(), at: 5, security: Some(security()), node: None },
            _ => {
                // The last manager can be neither demoted nor removed.
                let managers: Vec<&Node> = s.nodes.values().filter(|n| n.role == NodeRole::Manager).collect();
                prop_assert!(!managers.is_empty());
                if managers.len() > 1 {
                    return Ok(());
                }
                Command::RemoveNode { id: managers[0].id.clone(), at: 5 }
            }
        };
        let r = s.apply(cmds.len() as u64 + 1, &cmd);
        prop_assert!(r.rejected.is_some(), "{:?} was accepted", cmd);
        prop_assert!(r.events.is_empty());
        prop_assert_eq!(before, s);
    }

    /// Membership and security invariants: some node is a manager; no task
    /// is wanted on a node that is gone; tokens are filed under their ids
    /// with distinct names; the join secrets differ.
    #[test]
    fn membership_and_security_invariants_hold(ops in proptest::collection::vec(op(), 0..60)) {
        let cmds = commands(&ops);
        let mut s = ClusterState::default();
        for (i, c) in cmds.iter().enumerate() {
            s.apply(i as u64 + 1, c);
            prop_assert!(s.nodes.values().any(|n| n.role == NodeRole::Manager), "no manager left");
            for t in s.tasks.values() {
                if let Some(n) = &t.node_id && !s.nodes.contains_key(n) {
                    prop_assert_eq!(t.desired_state, DesiredState::Shutdown, "task {} wanted on removed node {}", t.id, n);
                    prop_assert!(t.status.state.is_terminal(), "task {} live on removed node {}", t.id, n);
                }
            }
            let mut names = BTreeSet::new();
            for (id, t) in &s.security.tokens {
                prop_assert_eq!(id, &t.id);
                prop_assert!(names.insert(t.name.clone()), "two tokens named {}", t.name);
                prop_assert!(t.validate().is_ok());
            }
            prop_assert!(s.security.tokens.contains_key(ADMIN_ID));
            prop_assert_ne!(&s.security.manager_secret, &s.security.worker_secret);
            prop_assert_eq!(s.security.validate(), Ok(()));
        }
    }
}

/// `cmds` cut into batches of the given sizes (a batch of one stays a plain command).
fn batched(cmds: &[Command], sizes: &[usize]) -> Vec<Command> {
    let mut out = Vec::new();
    let mut rest = cmds;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(n.clamp(1, rest.len()));
        out.push(match chunk {
            [one] => one.clone(),
            many => Command::Batch { commands: many.to_vec() },
        });
        rest = tail;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A log of batches (group commit) is applied the same on every manager,
    /// through JSON too, and every command of a batch gets its own result.
    #[test]
    fn batched_logs_apply_deterministically(
        ops in proptest::collection::vec(op(), 0..40),
        sizes in proptest::collection::vec(1usize..6, 1..5),
    ) {
        let log = batched(&commands(&ops), &sizes);
        let (mut a, mut b, mut c) = (ClusterState::default(), ClusterState::default(), ClusterState::default());
        for (i, cmd) in log.iter().enumerate() {
            let index = i as u64 + 1;
            let ra = a.apply(index, cmd);
            prop_assert_eq!(&ra, &b.apply(index, cmd));
            let decoded: Command = serde_json::from_slice(&serde_json::to_vec(cmd).expect("encode")).expect("decode");
            prop_assert_eq!(&decoded, cmd);
            c.apply(index, &decoded);
            match cmd {
                Command::Batch { commands } => {
                    prop_assert_eq!(ra.batch.len(), commands.len());
                    prop_assert!(ra.events.is_empty() && ra.rejected.is_none());
                }
                _ => prop_assert!(ra.batch.is_empty()),
            }
        }
        prop_assert_eq!(a.state_hash(), b.state_hash());
        prop_assert_eq!(a, c);
    }
}

fn initialised() -> ClusterState {
    let mut s = ClusterState::default();
    let m0 = Node { addr: "m0:4280".into(), ..node("m0") };
    let init = Command::InitCluster { cluster_id: "c".into(), at: 0, security: Some(security()), node: Some(m0) };
    assert_eq!(s.apply(1, &init).rejected, None);
    s
}

fn config(name: &str) -> Command {
    Command::CreateObject {
        kind: DataKind::Config,
        name: name.into(),
        data: Blob(b"x".to_vec()),
        labels: Default::default(),
        at: 7,
    }
}

#[test]
fn a_batch_of_one_is_the_command_alone() {
    let cmd = Command::PutStack { spec: stack(2, "web:1", "app"), prune: false, registry_auth: None, at: 7 };
    let (mut alone, mut batched) = (initialised(), initialised());
    let r = alone.apply(2, &cmd);
    let b = batched.apply(2, &Command::Batch { commands: vec![cmd] });
    assert_eq!(b.batch, vec![r]);
    assert_eq!(alone, batched, "same ids, same state");
}

#[test]
fn the_commands_of_a_batch_make_distinct_ids() {
    let mut s = initialised();
    let batch = Command::Batch {
        commands: vec![
            Command::PutStack { spec: stack(1, "web:1", "one"), prune: false, registry_auth: None, at: 7 },
            Command::PutStack { spec: stack(1, "web:1", "two"), prune: false, registry_auth: None, at: 7 },
        ],
    };
    let r = s.apply(2, &batch);
    assert!(r.batch.iter().all(|a| a.rejected.is_none()), "{r:?}");
    let stacks: BTreeSet<&str> = s.services.values().map(|svc| svc.stack.as_str()).collect();
    assert_eq!(stacks, BTreeSet::from(["one", "two"]), "one service per stack, none overwritten");
    assert_eq!(r.all_events().filter(|e| e.kind == stackd_core::state::ObjectKind::Service).count(), 2);
}

#[test]
fn a_refused_command_in_a_batch_leaves_the_others_alone() {
    let mut s = initialised();
    let batch = Command::Batch {
        commands: vec![
            config("a"),
            config("a"),
            Command::Batch { commands: vec![config("c")] },
            Command::RemoveNode { id: "no-such-node".into(), at: 7 },
            config("b"),
        ],
    };
    let r = s.apply(2, &batch);
    let refused: Vec<bool> = r.batch.iter().map(|a| a.rejected.is_some()).collect();
    assert_eq!(refused, [false, true, true, true, false]);
    assert!(r.batch[2].rejected.as_deref().is_some_and(|w| w.contains("batch")));
    assert_eq!(s.configs.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert!(r.batch.iter().filter(|a| a.rejected.is_some()).all(|a| a.events.is_empty()));
}
