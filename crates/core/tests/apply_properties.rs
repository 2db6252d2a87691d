//! Property tests of the replicated state machine's `apply`.

use proptest::prelude::*;
use stackd_core::ClusterState;
use stackd_core::command::{Command, TaskStatusUpdate};
use stackd_core::model::*;
use stackd_core::orchestrator::orchestrate;
use stackd_core::scheduler::{Scheduler, SpreadScheduler};

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
        updated_at: 0,
    }
}

fn stack(replicas: u64, image: &str, name: &str) -> StackSpec {
    stack_of(ServiceMode::Replicated { replicas }, image, name)
}

fn stack_of(mode: ServiceMode, image: &str, name: &str) -> StackSpec {
    let svc = ServiceSpec {
        name: "web".into(),
        mode,
        task: TaskTemplate { image: image.into(), ..Default::default() },
        restart: RestartPolicy::default(),
        update: UpdateConfig::default(),
        rollback: UpdateConfig::rollback_default(),
        labels: Default::default(),
        endpoint_mode: EndpointMode::Vip,
    };
    StackSpec { name: name.into(), services: [("web".to_string(), svc)].into(), ..Default::default() }
}

/// A random operation on the cluster; the orchestrator and scheduler run after each.
#[derive(Clone, Debug)]
enum Op {
    Deploy { replicas: u64, image: u8, job: bool },
    Remove,
    Report { pick: prop::sample::Index, state: u8, exit: i64 },
    Tick(u64),
    Drain(bool),
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
    ]
}

const STATES: [TaskState; 11] = [
    TaskState::New,
    TaskState::Pending,
    TaskState::Assigned,
    TaskState::Preparing,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Complete,
    TaskState::Shutdown,
    TaskState::Failed,
    TaskState::Rejected,
    TaskState::Orphaned,
];

/// Turns random operations into the commands a cluster would apply.
fn commands(ops: &[Op]) -> Vec<Command> {
    let mut state = ClusterState::default();
    let mut out = Vec::new();
    let mut now = 1_000_000u64;
    let push = |state: &mut ClusterState, out: &mut Vec<Command>, cmd: Command| {
        state.apply(out.len() as u64 + 1, &cmd);
        out.push(cmd);
    };
    push(&mut state, &mut out, Command::InitCluster { cluster_id: "c".into(), at: 0, security: None, node: None });
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
                Command::PutStack { spec: stack_of(mode, &format!("web:{image}"), "app"), prune: false, at: now }
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

    /// Observed states never go back; a stopped task is never wanted again;
    /// no slot ever holds two wanted tasks of the same template; a job slot
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
                    prop_assert!(t.status.state >= old.status.state, "task {} went from {} to {}", id, old.status.state, t.status.state);
                    prop_assert!(t.desired_state >= old.desired_state);
                }
            }
            for svc in s.services.values() {
                let mut seen = std::collections::BTreeSet::new();
                for t in s.tasks_of(&svc.id).filter(|t| t.desired_state == DesiredState::Running && t.slot > 0) {
                    prop_assert!(seen.insert((t.slot, serde_json::to_string(&t.template).expect("json"))), "slot {} holds two wanted tasks", t.slot);
                }
                if let ServiceMode::ReplicatedJob { replicas, max_concurrent } = svc.spec.mode {
                    for slot in 1..=replicas {
                        let mut run: Vec<&Task> = s.tasks_of(&svc.id).filter(|t| t.slot == slot && t.revision == svc.revision).collect();
                        run.sort_by_key(|t| (t.created_at, t.id.clone()));
                        if let Some(done) = run.iter().position(|t| t.status.state == TaskState::Complete) {
                            prop_assert_eq!(done, run.len() - 1, "slot {} got a task after it completed", slot);
                        }
                    }
                    let live = s.tasks_of(&svc.id).filter(|t| t.revision == svc.revision && t.desired_state == DesiredState::Running && !t.status.state.is_terminal()).count() as u64;
                    prop_assert!(live <= max_concurrent, "{} job tasks in flight, max_concurrent {}", live, max_concurrent);
                }
            }
        }
    }

    /// A refused command changes nothing.
    #[test]
    fn refused_commands_change_nothing(ops in proptest::collection::vec(op(), 0..30), bad in 0u8..3) {
        let cmds = commands(&ops);
        let mut s = ClusterState::default();
        for (i, c) in cmds.iter().enumerate() {
            s.apply(i as u64 + 1, c);
        }
        let before = s.clone();
        let cmd = match bad {
            0 => Command::PutStack { spec: stack(1, "", "app"), prune: true, at: 5 },
            1 => Command::PutStack { spec: stack(1, "web:1", "bad name!"), prune: false, at: 5 },
            _ => Command::RemoveStack { name: "no-such-stack".into(), at: 5 },
        };
        let r = s.apply(cmds.len() as u64 + 1, &cmd);
        prop_assert!(r.rejected.is_some());
        prop_assert_eq!(before, s);
    }
}
