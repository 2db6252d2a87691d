//! What a controller tick and an apply cost on a large state: the numbers
//! behind the snapshot decision in docs/architecture.md (The controller loop).
//!
//! ```text
//! cargo test --release -p stackd-core --test state_cost -- --ignored --nocapture
//! ```
//!
//! Ignored by default: it builds a 100,000-task state (seconds in a debug build).

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
        updated_at: 0,
    }
}

fn service(k: usize) -> ServiceSpec {
    ServiceSpec {
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
    apply(&mut s, Command::PutStack { spec, prune: false, at: NOW });
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

#[test]
#[ignore = "a micro-benchmark: run with --release --ignored --nocapture"]
fn cost_of_a_tick_and_an_apply_at_100k_tasks() {
    let built = Instant::now();
    let (state, mut index) = large_state();
    println!("built {} tasks on {} nodes in {:?}", state.tasks.len(), state.nodes.len(), built.elapsed());
    assert_eq!(state.tasks.len(), SERVICES * REPLICAS as usize);
    assert!(orchestrate(&state, NOW + 1).plan.is_empty(), "converged");

    let clone = time(5, || state.clone());
    let orch = time(5, || orchestrate(&state, NOW + 1));
    let sched = time(5, || SpreadScheduler.schedule(&state));

    // An apply in place (what the state machine does today, and with an Arc
    // nobody else holds), and one while a reader holds a snapshot (copy on write).
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
    let cow = time(5, || {
        let snapshot = shared.clone();
        n += 1;
        index += 1;
        let cmd = report(&tasks, n);
        let r = Arc::make_mut(&mut shared).apply(index, &cmd);
        drop(snapshot);
        r
    });
    let snapshot = time(101, || shared.clone());
    println!("clone of the state          {clone:>12?}");
    println!("orchestrate (idle)          {orch:>12?}");
    println!("schedule (idle)             {sched:>12?}");
    println!("apply, unshared             {in_place:>12?}");
    println!("apply, snapshot held (CoW)  {cow:>12?}");
    println!("Arc snapshot                {snapshot:>12?}");
}
