//! What a controller tick and an apply cost on a large state: the numbers
//! behind the snapshot decision in docs/architecture.md (The controller loop).
//!
//! ```text
//! cargo test --release -p stackd-core --test state_cost -- --ignored --nocapture
//! ```
//!
//! Ignored by default: it builds a 100,000-task state. Each line is a median
//! of its runs but the build and the last two (one run each).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stackd_core::command::TaskStatusUpdate;
use stackd_core::model::{
    Availability, EndpointMode, Node, NodeRole, NodeState, Resources, RestartPolicy, ServiceMode, ServiceSpec,
    StackSpec, TaskState, TaskStatus, TaskTemplate, UpdateConfig,
};
use stackd_core::orchestrator::orchestrate;
use stackd_core::scheduler::{Scheduler, SpreadScheduler};
use stackd_core::state::Applied;
use stackd_core::{ClusterState, Command};

const NODES: usize = 100;
const SERVICES: usize = 100;
const REPLICAS: u64 = 1_000;
const NOW: u64 = 1_000_000;

fn node(k: usize) -> Node {
    Node {
        id: format!("{k:016x}"),
        name: format!("n{k}"),
        addr: format!("10.0.{}.{}:4280", k / 256, k % 256),
        role: if k < 3 { NodeRole::Manager } else { NodeRole::Worker },
        availability: Availability::Active,
        state: NodeState::Ready,
        labels: BTreeMap::new(),
        resources: Resources::default(),
        engine_version: "27.0".into(),
        engine: Default::default(),
        updated_at: 0,
    }
}

fn service(k: usize) -> ServiceSpec {
    ServiceSpec {
        autoscale: None,
        name: format!("svc{k}"),
        mode: ServiceMode::Replicated { replicas: REPLICAS },
        task: TaskTemplate {
            image: format!("registry.example.com/team/app{k}:1.0"),
            env: (0..5).map(|e| format!("VAR_{e}=value-{e}")).collect(),
            stop_grace_period_ms: 10_000,
            ..Default::default()
        },
        restart: RestartPolicy::default(),
        update: UpdateConfig::default(),
        rollback: UpdateConfig::rollback_default(),
        labels: BTreeMap::new(),
        endpoint_mode: EndpointMode::Vip,
        depends_on: Vec::new(),
    }
}

/// A converged cluster: NODES nodes, SERVICES × REPLICAS running tasks.
fn large_state() -> (ClusterState, u64) {
    let mut s = ClusterState::default();
    let mut index = 0;
    let mut apply = |s: &mut ClusterState, cmd: Command| {
        index += 1;
        let r = s.apply(index, &cmd);
        assert_eq!(r.rejected, None);
    };
    apply(&mut s, Command::InitCluster { cluster_id: "c".into(), at: 0, security: None, node: None });
    for k in 0..NODES {
        apply(&mut s, Command::UpsertNode { node: node(k), at: 0 });
    }
    let spec = StackSpec {
        name: "app".into(),
        services: (0..SERVICES).map(service).map(|s| (s.name.clone(), s)).collect(),
        ..Default::default()
    };
    apply(&mut s, Command::PutStack { spec, prune: false, registry_auth: None, at: NOW });
    let plan = orchestrate(&s, NOW).plan;
    apply(&mut s, Command::ApplyPlan { plan, at: NOW });
    let decisions = SpreadScheduler.schedule(&s);
    apply(&mut s, Command::Schedule { decisions, at: NOW });
    let updates: Vec<TaskStatusUpdate> = s
        .tasks
        .values()
        .map(|t| TaskStatusUpdate {
            task_id: t.id.clone(),
            node_id: t.node_id.clone().expect("assigned"),
            status: TaskStatus { state: TaskState::Running, timestamp: NOW, ..Default::default() },
        })
        .collect();
    for chunk in updates.chunks(1_000) {
        apply(&mut s, Command::UpdateTaskStatus { updates: chunk.to_vec(), at: NOW });
    }
    (s, index)
}

/// The median of `runs` timings of `f`.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// One agent report about one of `tasks` (id, node): the command an apply sees most often.
fn report(tasks: &[(String, String)], n: u64) -> Command {
    let (task_id, node_id) = &tasks[(n as usize * 7919) % tasks.len()];
    Command::UpdateTaskStatus {
        updates: vec![TaskStatusUpdate {
            task_id: task_id.clone(),
            node_id: node_id.clone(),
            status: TaskStatus { state: TaskState::Running, timestamp: NOW + n, ..Default::default() },
        }],
        at: NOW + n,
    }
}

/// `apply` of `cmd` at the next index while a reader holds a snapshot (an
/// `Arc` of the state, as the controller loops hold one): copy on write.
fn apply_under_snapshot(shared: &mut Arc<ClusterState>, index: &mut u64, cmd: &Command) -> Applied {
    let snapshot = shared.clone();
    *index += 1;
    let r = Arc::make_mut(shared).apply(*index, cmd);
    drop(snapshot);
    r
}

#[test]
#[ignore = "a micro-benchmark: run with --release --ignored --nocapture"]
fn cost_of_a_tick_and_an_apply_at_100k_tasks() {
    let built = Instant::now();
    let (state, mut index) = large_state();
    let built = built.elapsed();
    println!("built {} tasks on {} nodes", state.tasks.len(), state.nodes.len());
    assert_eq!(state.tasks.len(), SERVICES * REPLICAS as usize);
    assert!(orchestrate(&state, NOW + 1).plan.is_empty(), "converged");

    let clone = time(11, || state.clone());
    let orch = time(11, || orchestrate(&state, NOW + 1));
    let sched = time(11, || SpreadScheduler.schedule(&state));
    let encoded = serde_json::to_vec(&state).expect("encodes");
    let encode = time(5, || serde_json::to_vec(&state).expect("encodes"));
    let decode = time(5, || serde_json::from_slice::<ClusterState>(&encoded).expect("decodes"));

    // An apply in place (an Arc nobody else holds), and one while a reader
    // holds a snapshot (copy on write).
    let tasks: Vec<(String, String)> =
        state.tasks.values().map(|t| (t.id.clone(), t.node_id.clone().unwrap_or_default())).collect();
    let mut shared = Arc::new(state);
    let mut n = 0;
    let in_place = time(101, || {
        n += 1;
        index += 1;
        let cmd = report(&tasks, n);
        Arc::make_mut(&mut shared).apply(index, &cmd)
    });
    let cow = time(101, || {
        n += 1;
        let cmd = report(&tasks, n);
        apply_under_snapshot(&mut shared, &mut index, &cmd)
    });
    // A batch of 1,000 reports (one agent's full batch) under a snapshot.
    let batch_cow = time(11, || {
        let updates = (0..1_000)
            .flat_map(|_| {
                n += 1;
                let Command::UpdateTaskStatus { updates, .. } = report(&tasks, n) else { unreachable!() };
                updates
            })
            .collect();
        let cmd = Command::UpdateTaskStatus { updates, at: NOW + n };
        apply_under_snapshot(&mut shared, &mut index, &cmd)
    });
    let snapshot = time(101, || shared.clone());
    // A node goes down under a snapshot: its 1,000 tasks become orphans.
    let down = Command::SetNodeState { id: node(NODES - 1).id, state: NodeState::Down, at: NOW + n + 1 };
    let node_down = Instant::now();
    let r = apply_under_snapshot(&mut shared, &mut index, &down);
    let node_down = node_down.elapsed();
    let orphans = r.events.len() - 1;
    assert!(orphans >= SERVICES * REPLICAS as usize / NODES, "the node's tasks: {orphans}");
    // The plan that replaces them.
    let plan = orchestrate(&shared, NOW + n + 2).plan;
    assert_eq!(plan.create.len(), orphans);
    let cmd = Command::ApplyPlan { plan, at: NOW + n + 2 };
    let replace = Instant::now();
    apply_under_snapshot(&mut shared, &mut index, &cmd);
    let replace = replace.elapsed();

    println!("build (through apply)           {built:>12.2?}");
    println!("clone of the state              {clone:>12.2?}");
    println!("orchestrate (idle)              {orch:>12.2?}");
    println!("schedule (idle)                 {sched:>12.2?}");
    println!("encode (snapshot, state_hash)   {encode:>12.2?}");
    println!("decode (snapshot load)          {decode:>12.2?}");
    println!("apply 1 report, unshared        {in_place:>12.2?}");
    println!("apply 1 report, snapshot held   {cow:>12.2?}");
    println!("apply 1,000 reports, snap. held {batch_cow:>12.2?}");
    println!("Arc snapshot                    {snapshot:>12.2?}");
    println!("apply node down ({orphans} tasks)  {node_down:>12.2?}");
    println!("apply their {orphans} creates    {replace:>12.2?}");
}
