//! Property tests of the scheduler (issue 16).
//!
//! Each case is a random cluster of 1–12 nodes (labels `zone` and `disk`,
//! role, CPUs and memory, some not reported) and 1–4 services (replicated
//! with 0–20 replicas, or global) with random constraints,
//! `max_replicas_per_node` and reservations. It plays two phases:
//!
//! 1. the nodes as they were (labels, availability, liveness): deploy, let
//!    the controller settle, the agent run every task;
//! 2. the nodes as they are now (labels changed, paused, drained, down,
//!    back up) and the replicated services scaled: the controller settles
//!    again, on top of the tasks that run since phase 1.
//!
//! Every controller round (orchestrate, then schedule) is checked, against
//! an oracle written here rather than the scheduler's own filters:
//!
//! 1. every task placed in the round (status `assigned`: the agent has not
//!    run it yet; global tasks, which the orchestrator creates on their node,
//!    included) is on a node that is ready, active and satisfies its
//!    constraints;
//! 2. on no node does a service hold more than `max_replicas_per_node` tasks
//!    that occupy a slot (wanted, or being stopped and not stopped yet);
//! 3. on no node do those tasks reserve more CPU or memory than the node
//!    offers (a node that reports 0 of a resource is not checked for it,
//!    the scheduler's documented rule);
//! 4. spread. A node *has room* for a service at the end of a round when it
//!    is ready and active, satisfies the service's constraints, holds fewer
//!    than `max_replicas_per_node` of its tasks, and has the CPU and memory
//!    one more task reserves. For every node that received a task of the
//!    service in the round and every node that still has room for it,
//!    `count(received) ≤ count(room) + 1`. The property is about fresh
//!    placements only: the scheduler never moves a task, so tasks placed
//!    before (when fewer nodes were eligible: paused, down, labelled
//!    otherwise) can leave a node above the others, which only a rebalance
//!    evens out. Spread preferences are not generated: they rank before the
//!    per-node count, by design. And no task is left unplaceable while a
//!    node has room for it at the end of the round (loads only grow within
//!    a round, so the node had room when the task's turn came);
//! 5. an unplaceable task's reason counts every node once, under the filter
//!    that refused it: not ready, then not active, then the first unmet
//!    constraint, exactly; the rest under `max_replicas_per_node`, CPU or
//!    memory;
//! 6. determinism: the same state scheduled twice gives the same decisions,
//!    and the whole run gives the same decisions, round by round, whatever
//!    the order the nodes joined in (every map of the state is ordered by
//!    id; the scheduler breaks ties by creation time, service name, slot,
//!    then node id).

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::{Scheduler, SpreadScheduler, effective};
use crate::command::{Command, Placement};
use crate::model::*;
use crate::orchestrator::orchestrate;
use crate::orchestrator::tests::{Sim, node, spec};
use crate::state::ClusterState;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const CPU: u64 = 1_000_000_000;

/// The constraints a service may have, as written in a stack file.
const CONSTRAINTS: &[&str] = &[
    "node.labels.zone == a",
    "node.labels.zone != b",
    "node.labels.disk != hdd",
    "node.labels.disk == ssd",
    "node.role == manager",
    "node.role == worker",
    "node.hostname != n03",
];

/// What the operator and the failure detector made of a node, in one phase.
#[derive(Clone, Debug)]
struct NodePhase {
    zone: Option<&'static str>,
    availability: Availability,
    state: NodeState,
}

#[derive(Clone, Debug)]
struct NodeCase {
    disk: Option<&'static str>,
    worker: bool,
    nano_cpus: u64,
    memory_bytes: u64,
    before: NodePhase,
    after: NodePhase,
}

#[derive(Clone, Debug)]
struct ServiceCase {
    /// Replicas before and after the scale; `None`: global.
    replicas: Option<(u64, u64)>,
    constraints: Vec<&'static str>,
    max_per_node: u64,
    nano_cpus: u64,
    memory_bytes: u64,
}

#[derive(Clone, Debug)]
struct Case {
    nodes: Vec<NodeCase>,
    services: Vec<ServiceCase>,
    /// The order the nodes join in, for the second run.
    join_order: Vec<usize>,
}

fn node_phase() -> impl Strategy<Value = NodePhase> {
    (
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        prop::sample::select(vec![
            Availability::Active,
            Availability::Active,
            Availability::Active,
            Availability::Pause,
            Availability::Drain,
        ]),
        prop::sample::select(vec![NodeState::Ready, NodeState::Ready, NodeState::Ready, NodeState::Down]),
    )
        .prop_map(|(zone, availability, state)| NodePhase { zone, availability, state })
}

fn node_case() -> impl Strategy<Value = NodeCase> {
    (
        prop::option::of(prop::sample::select(vec!["ssd", "hdd"])),
        any::<bool>(),
        prop::sample::select(vec![0, CPU, 2 * CPU, 4 * CPU]),
        prop::sample::select(vec![0, GIB / 2, GIB, 2 * GIB, 4 * GIB]),
        node_phase(),
        node_phase(),
    )
        .prop_map(|(disk, worker, nano_cpus, memory_bytes, before, after)| NodeCase {
            disk,
            worker,
            nano_cpus,
            memory_bytes,
            before,
            after,
        })
}

fn service_case() -> impl Strategy<Value = ServiceCase> {
    (
        prop::option::weighted(0.8, (0..=20u64, 0..=20u64)),
        prop::sample::subsequence(CONSTRAINTS.to_vec(), 0..=2),
        0..=3u64,
        prop::sample::select(vec![0, 0, CPU / 4, CPU / 2, CPU, 3 * CPU / 2]),
        prop::sample::select(vec![0, 0, 128 * MIB, 256 * MIB, 512 * MIB, GIB]),
    )
        .prop_map(|(replicas, constraints, max_per_node, nano_cpus, memory_bytes)| ServiceCase {
            replicas,
            constraints,
            max_per_node,
            nano_cpus,
            memory_bytes,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (prop::collection::vec(node_case(), 1..=12), prop::collection::vec(service_case(), 1..=4)).prop_flat_map(
        |(nodes, services)| {
            let order = Just((0..nodes.len()).collect::<Vec<_>>()).prop_shuffle();
            (Just(nodes), Just(services), order).prop_map(|(nodes, services, join_order)| Case {
                nodes,
                services,
                join_order,
            })
        },
    )
}

fn node_id(i: usize) -> String {
    format!("n{:02}", i + 1)
}

fn specs(case: &Case, after: bool) -> Vec<ServiceSpec> {
    case.services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut sp = spec(&format!("s{i}"), 0, "img:1");
            sp.mode = match s.replicas {
                Some((before, now)) => ServiceMode::Replicated { replicas: if after { now } else { before } },
                None => ServiceMode::Global,
            };
            let placement = &mut sp.task.placement;
            placement.constraints = s.constraints.iter().map(|c| Constraint::parse(c).expect("valid")).collect();
            placement.max_replicas_per_node = s.max_per_node;
            sp.task.resources.reservations =
                Resources { nano_cpus: s.nano_cpus, memory_bytes: s.memory_bytes, ..Resources::default() };
            sp
        })
        .collect()
}

/// Gives every node its labels, availability and liveness of a phase.
fn set_nodes(sim: &mut Sim, case: &Case, after: bool) {
    for (i, n) in case.nodes.iter().enumerate() {
        let id = node_id(i);
        let phase = if after { &n.after } else { &n.before };
        if let Some(node) = sim.state.nodes.get_mut(&id) {
            // No command changes labels yet (`stackctl node update` is to come).
            node.labels.remove("zone");
            if let Some(z) = phase.zone {
                node.labels.insert("zone".into(), z.into());
            }
        }
        let at = sim.now;
        sim.apply(Command::SetNodeAvailability { id: id.clone(), availability: phase.availability, at });
        sim.apply(Command::SetNodeState { id, state: phase.state, at });
    }
}

/// Whether a constraint holds on a node, written again here for the keys
/// the cases use: values compared in any case, a missing label is empty.
fn holds(c: &Constraint, n: &Node) -> bool {
    let have = match c.key.as_str() {
        "node.role" => n.role.as_str(),
        "node.hostname" => n.name.as_str(),
        key => n.labels.get(key.trim_start_matches("node.labels.")).map_or("", String::as_str),
    };
    have.eq_ignore_ascii_case(&c.value) == (c.op == ConstraintOp::Eq)
}

/// Why a node cannot take one more task of `template` (of service `svc`):
/// the load-independent filters by name, the others as `Load`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Refused {
    NotReady,
    NotActive(Availability),
    Constraint(String),
    Load,
}

/// What a node's slot-holding tasks hold: tasks per service, CPU, memory.
#[derive(Default)]
struct Load {
    per_service: BTreeMap<String, u64>,
    nano_cpus: u64,
    memory_bytes: u64,
}

fn loads(state: &ClusterState) -> BTreeMap<String, Load> {
    let mut out: BTreeMap<String, Load> = BTreeMap::new();
    for t in state.tasks.values() {
        let Some(n) = &t.node_id else { continue };
        if t.is_orphaned() || (t.desired_state != DesiredState::Running && t.status.state.is_terminal()) {
            continue;
        }
        let l = out.entry(n.clone()).or_default();
        *l.per_service.entry(t.service_id.clone()).or_default() += 1;
        l.nano_cpus += t.template.resources.reservations.nano_cpus;
        l.memory_bytes += t.template.resources.reservations.memory_bytes;
    }
    out
}

fn refused(n: &Node, load: Option<&Load>, svc: &str, template: &TaskTemplate) -> Option<Refused> {
    if n.state != NodeState::Ready {
        return Some(Refused::NotReady);
    }
    if n.availability != Availability::Active {
        return Some(Refused::NotActive(n.availability));
    }
    if let Some(c) = template.placement.constraints.iter().find(|c| !holds(c, n)) {
        return Some(Refused::Constraint(c.to_string()));
    }
    let empty = Load::default();
    let load = load.unwrap_or(&empty);
    let max = template.placement.max_replicas_per_node;
    let held = load.per_service.get(svc).copied().unwrap_or(0);
    let want = &template.resources.reservations;
    let cpu_short = n.resources.nano_cpus > 0 && load.nano_cpus + want.nano_cpus > n.resources.nano_cpus;
    let mem_short = n.resources.memory_bytes > 0 && load.memory_bytes + want.memory_bytes > n.resources.memory_bytes;
    ((max > 0 && held >= max) || cpu_short || mem_short).then_some(Refused::Load)
}

/// Properties 1–3, on the whole state.
fn check_state(state: &ClusterState) -> Result<(), TestCaseError> {
    for t in state.tasks.values() {
        if t.status.state != TaskState::Assigned || t.desired_state != DesiredState::Running {
            continue;
        }
        let n = &state.nodes[t.node_id.as_ref().expect("assigned")];
        prop_assert_eq!(n.state, NodeState::Ready, "task {} placed on {}", t.id, n.id);
        prop_assert_eq!(n.availability, Availability::Active, "task {} placed on {}", t.id, n.id);
        for c in &t.template.placement.constraints {
            prop_assert!(holds(c, n), "task {} of {} placed on {} against {}", t.id, t.service_name, n.id, c);
        }
    }
    for (id, load) in loads(state) {
        let n = &state.nodes[&id];
        for (svc, held) in &load.per_service {
            let max = state.services[svc].spec.task.placement.max_replicas_per_node;
            prop_assert!(max == 0 || *held <= max, "{id} holds {held} tasks of {svc}, max {max}");
        }
        let r = &n.resources;
        prop_assert!(
            r.nano_cpus == 0 || load.nano_cpus <= r.nano_cpus,
            "{id}: CPU {} of {}",
            load.nano_cpus,
            r.nano_cpus
        );
        prop_assert!(
            r.memory_bytes == 0 || load.memory_bytes <= r.memory_bytes,
            "{id}: memory {} of {}",
            load.memory_bytes,
            r.memory_bytes
        );
    }
    Ok(())
}

/// Properties 4 and 5, for the decisions of one round: `before` the state
/// they were made on, `after` the state they led to.
fn check_round(before: &ClusterState, decisions: &[Placement], after: &ClusterState) -> Result<(), TestCaseError> {
    let end = loads(after);
    // Per service: the template of its tasks this round, and the nodes that received one.
    let mut received: BTreeMap<&str, (&TaskTemplate, Vec<&str>)> = BTreeMap::new();
    for d in decisions {
        let task_id = match d {
            Placement::Assign { task_id, .. } | Placement::Unplaceable { task_id, .. } => task_id,
        };
        let t = &before.tasks[task_id];
        let entry = received.entry(t.service_id.as_str()).or_insert((&t.template, Vec::new()));
        prop_assert!(*entry.0 == t.template, "one template per service and round");
        match d {
            Placement::Assign { node_id, .. } => entry.1.push(node_id),
            Placement::Unplaceable { reason, .. } => {
                for n in after.nodes.values() {
                    let why = refused(n, end.get(&n.id), &t.service_id, &t.template);
                    prop_assert!(
                        why.is_some(),
                        "task {} of {} left unplaceable ({reason}) but {} has room",
                        t.id,
                        t.service_name,
                        n.id
                    );
                }
                check_reason(after, t, reason)?;
            }
        }
    }
    for (svc, (template, nodes)) in &received {
        let count = |n: &str| end.get(n).and_then(|l| l.per_service.get(*svc)).copied().unwrap_or(0);
        let Some(most) = nodes.iter().map(|n| count(n)).max() else { continue };
        for n in after.nodes.values() {
            if refused(n, end.get(&n.id), svc, template).is_none() {
                prop_assert!(
                    most <= count(&n.id) + 1,
                    "{svc}: a node received its {most}th task while {} has room and holds {}",
                    n.id,
                    count(&n.id)
                );
            }
        }
    }
    Ok(())
}

/// Property 5: the reason names every node once, under the filter that
/// refused it. `state` is the state at the end of the round: a node refused
/// for its load when the task's turn came is still refused for it (loads
/// only grow), and one refused then is refused at the end (checked by the
/// caller), the load-independent filters the same.
fn check_reason(state: &ClusterState, t: &Task, reason: &str) -> Result<(), TestCaseError> {
    let mut said: BTreeMap<String, usize> = BTreeMap::new();
    for part in reason.split("; ") {
        let (n, what) = part.split_once(": ").unwrap_or(("", part));
        let n: usize = n.trim_end_matches(" nodes").trim_end_matches(" node").parse().unwrap_or(usize::MAX);
        prop_assert!(n != usize::MAX, "reason {reason:?} does not count nodes");
        *said.entry(what.to_string()).or_default() += n;
    }
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_load = 0;
    let loads = loads(state);
    for n in state.nodes.values() {
        let text = match refused(n, loads.get(&n.id), &t.service_id, &t.template) {
            None => unreachable!("checked by the caller"),
            Some(Refused::NotReady) => "node not ready".to_string(),
            Some(Refused::NotActive(a)) => format!("node availability is {}", format!("{a:?}").to_lowercase()),
            Some(Refused::Constraint(c)) => format!("constraint {c} not met"),
            Some(Refused::Load) => {
                by_load += 1;
                continue;
            }
        };
        *want.entry(text).or_default() += 1;
    }
    let mut said_by_load = 0;
    for (what, n) in &said {
        if ["max_replicas_per_node ", "insufficient CPU: ", "insufficient memory: "].iter().any(|p| what.starts_with(p))
        {
            said_by_load += n;
        } else {
            prop_assert_eq!(want.get(what).copied(), Some(*n), "{:?} in reason {:?}", what, reason);
        }
    }
    for (what, n) in &want {
        prop_assert_eq!(said.get(what), Some(n), "{:?} missing from reason {:?}", what, reason);
    }
    prop_assert_eq!(said_by_load, by_load, "reason {:?}", reason);
    Ok(())
}

/// The reference the scheduler's heap must match: every pending task
/// weighed against every node, in turn.
fn every_node_per_task(state: &ClusterState) -> Vec<Placement> {
    let Some((pending, mut loads)) = super::pending_and_loads(state) else { return Vec::new() };
    let mut out = Vec::new();
    for t in pending {
        super::place_one(state, &mut loads, t, &mut out);
    }
    out
}

/// Controller rounds until nothing changes, each one checked; the
/// scheduler's decisions of each round.
fn settle(sim: &mut Sim, log: &mut Vec<Vec<Placement>>) -> Result<(), TestCaseError> {
    for _ in 0..30 {
        let o = orchestrate(&sim.state, sim.now);
        if !o.plan.is_empty() {
            sim.apply(Command::ApplyPlan { plan: o.plan.clone(), at: sim.now });
        }
        check_state(&sim.state)?;
        let decisions = SpreadScheduler.schedule(&sim.state);
        prop_assert_eq!(&decisions, &SpreadScheduler.schedule(&sim.state.clone()), "same state, same decisions");
        prop_assert_eq!(
            &decisions,
            &every_node_per_task(&sim.state),
            "the heap of a run chooses as a look at every node"
        );
        for limit in [0, 1, 3] {
            let bounded = SpreadScheduler.schedule_at_most(&sim.state, limit);
            prop_assert_eq!(
                &bounded[..],
                &decisions[..limit.min(decisions.len())],
                "a bounded pass places the first tasks alike"
            );
        }
        let before = sim.state.clone();
        let news = effective(&sim.state, decisions.clone());
        if !news.is_empty() {
            sim.apply(Command::Schedule { decisions: news, at: sim.now });
        }
        check_state(&sim.state)?;
        check_round(&before, &decisions, &sim.state)?;
        let assigned = decisions.iter().any(|d| matches!(d, Placement::Assign { .. }));
        log.push(decisions);
        if o.plan.is_empty() && !assigned {
            return Ok(());
        }
    }
    Err(TestCaseError::fail("the controller did not settle"))
}

/// Plays both phases, the nodes joining in `order`; the decisions of every round.
fn run(case: &Case, order: &[usize]) -> Result<Vec<Vec<Placement>>, TestCaseError> {
    let mut sim = Sim::new(&[]);
    for &i in order {
        let c = &case.nodes[i];
        let mut n = node(&node_id(i));
        n.role = if c.worker { NodeRole::Worker } else { NodeRole::Manager };
        if let Some(d) = c.disk {
            n.labels.insert("disk".into(), d.into());
        }
        n.resources = Resources { nano_cpus: c.nano_cpus, memory_bytes: c.memory_bytes, ..Resources::default() };
        sim.apply(Command::UpsertNode { node: n, at: 0 });
    }
    let mut log = Vec::new();
    set_nodes(&mut sim, case, false);
    sim.deploy(specs(case, false));
    settle(&mut sim, &mut log)?;
    sim.agent();
    sim.now += 10_000;
    settle(&mut sim, &mut log)?;
    sim.agent();
    set_nodes(&mut sim, case, true);
    sim.deploy(specs(case, true));
    settle(&mut sim, &mut log)?;
    Ok(log)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn placements_honour_every_filter_spread_and_are_deterministic(case in case()) {
        let joined: Vec<usize> = (0..case.nodes.len()).collect();
        let log = run(&case, &joined)?;
        let shuffled = run(&case, &case.join_order)?;
        prop_assert_eq!(log, shuffled, "the order nodes joined in changed the placement");
    }
}
